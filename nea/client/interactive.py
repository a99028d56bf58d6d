"""Interactive mode: what the user types goes to the server, what comes back is labelled.

Right after connecting the client sends ``{"type":"hello"}``, which switches the
server to JSON for this connection, so every push can be told apart (a date
from a reversed line that looks like one). The server still reads a line that
does not start with ``{`` as text, so the user's lines are sent exactly as typed
and mean what they would mean from ``nc``. On a listener without JSON (the
``relay`` profile) the hello is refused and the text lines are shown as they come.

Forwarded ``message X`` lines are shown, not answered: the user decides whether
to type ``ok X``, unless ``auto_ack`` is set.
"""

import json
import random
from collections.abc import Callable

from nea.client.link import ServerLink
from nea.client.redial import DialConfig, Redialer
from nea.wire import codec, errors, frames
from nea.wire.forms import PUSHES
from nea.wire.frames import Encoding

_QUIT_WORDS = (b"exit", b"quit")


def format_push(push: frames.Push) -> str:
    """How a push is shown to a person: a bracketed kind, then the content."""
    match push:
        case frames.DatePush(date):
            return f"[date] {date}"
        case frames.ReverseReply(text):
            return f"[reverse] {text}"
        case frames.RelayPush(text):
            return f"[relay] message {text}"
        case frames.AckPush(text):
            return f"[ack] ok {text}"
        case frames.ChatPush(sender, text):
            return f"[chat] {sender}: {text}"
        case frames.HistoryLine(id, time, _, name, text):
            return f"[history {id} {time}] {'*' if name is None else name + ':'} {text}"
        case frames.HistoryEnd(last_id, more):
            return f"[history end] last id {last_id}" + (", more to ask" if more else "")
        case frames.Presence(name, event):
            return f"[presence] {name} {event}"
        case frames.Gap(since, until, last_id):
            return (
                f"[gap] chat between {since} and {until} may have been missed"
                f"  (ask: since {last_id})"
            )
        case frames.BroadcastPush(text):
            return f"[broadcast] {text}"
        case frames.NickReply(name):
            return f"[nick] you are now {name}"
        case frames.Welcome(name, instance, profile):
            return f"[welcome] you are {name} on instance {instance} (profile {profile})"
        case frames.StatusReply(status):
            return "[status] " + json.dumps(status, indent=2, sort_keys=True)
        case frames.ErrorReply(code, message):
            return f"[error {code}] {message}"
        case frames.Bye():
            return "[bye]"
        case frames.PingPush():
            return "[ping]"
        case frames.PongPush():
            return "[pong] the server is there"
        case frames.Registered(name):
            return f"[registered] you are addressable as {name}"
        case frames.Serving(service):
            return f"[serving] you are a member of {service}"
        case frames.Unserved(service):
            return f"[unserved] you left {service}"
        case frames.RequestPush(id, body, service):
            via = f" (service {service})" if service is not None else ""
            return f"[request {id}]{via} {codec.body_text(body)}  (answer: reply {id} TEXT)"
        case frames.ReplyPush(id, body, instance):
            return f"[reply {id}] {codec.body_text(body)}  (from {instance})"
        case frames.Authenticated(subject):
            return f"[authenticated] you are {subject}"
    form = PUSHES.get(type(push))
    if form is None:
        raise TypeError(f"not a push: {push!r}")
    return f"[{form.kind}] {form.text(push)}"  # no label of its own: its kind and text form


class InteractiveClient(Redialer):
    """Connects (and reconnects), sends the user's lines, shows the server's.

    ``out`` receives each line to show; ``on_done`` is called once with the
    client when the session is over (``outcome`` "quit", "closed", "gave_up" or
    "tls_failed"). Lines typed while not connected wait (up to `MAX_PENDING`)
    and are sent once connected, so ``echo hello | nea-client`` works whatever
    the start order. The end of input is a polite goodbye: everything typed is
    sent, then ``exit``, and the replies are shown until the server's ``bye``.
    """

    __slots__ = (
        "out",
        "on_done",
        "auto_ack",
        "_pending",
        "_hello_pending",
        "_quitting",
        "_input_done",
    )

    #: Lines kept while not connected; more are dropped with a notice.
    MAX_PENDING = 1000
    #: Seconds to wait for the server to close after our goodbye.
    GOODBYE_TIMEOUT = 5.0

    def __init__(
        self,
        endpoint,
        clock,
        dial: DialConfig,
        out: Callable[[str], None],
        on_done: Callable[["InteractiveClient"], None],
        auto_ack: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(endpoint, clock, dial, rng)
        self.out = out
        self.on_done = on_done
        self.auto_ack = auto_ack
        self._pending: list[bytes] = []
        self._hello_pending = False
        self._quitting = False
        self._input_done = False

    # ---- the user's side ----

    def user_line(self, line: bytes) -> None:
        """The user typed ``line`` (without its terminator)."""
        link = self.link
        if self._input_done or self.outcome is not None:
            return
        if link is not None and link.ready:
            self._send_line(link, line)
        elif line.strip() in _QUIT_WORDS and not self._pending:
            self.finish("quit")
        elif len(self._pending) < self.MAX_PENDING:
            if not self._pending:
                self.out("[info] not connected yet; what you type is sent once connected")
            self._pending.append(line)
        else:
            self.out(f"[info] {self.MAX_PENDING} lines already wait for the connection; dropped")

    def user_done(self) -> None:
        """The input ended (Ctrl-D): send what is left, say goodbye, show the replies."""
        if self._input_done:
            return
        self._input_done = True
        link = self.link
        if link is not None and link.ready:
            self._say_goodbye(link)
        elif not self._pending:
            self.finish("closed")

    def _send_line(self, link: ServerLink, line: bytes) -> None:
        if line.strip() in _QUIT_WORDS:
            self._quitting = True
        link.send_line(line)

    def _say_goodbye(self, link: ServerLink) -> None:
        if not self._quitting:
            self._quitting = True
            link.send(frames.Exit())
        link.later(self.GOODBYE_TIMEOUT, link.close, "no goodbye from the server")

    # ---- Redialer hooks ----

    def ready(self, link: ServerLink) -> None:
        self._hello_pending = True
        link.send(frames.Hello(), Encoding.JSON)
        pending, self._pending = self._pending, []
        for line in pending:
            self._send_line(link, line)
        if self._input_done:
            self._say_goodbye(link)

    def received(self, link: ServerLink, push: frames.Push) -> None:
        if self._hello_pending and not isinstance(push, frames.DatePush):
            self._hello_pending = False
            if isinstance(push, frames.ErrorReply) and push.code == errors.NOT_IN_PROFILE.code:
                self.out("[info] this listener speaks text only; lines are shown as they come")
                return
        self.out(format_push(push))
        if isinstance(push, frames.Bye):
            self._quitting = True
        elif isinstance(push, frames.RelayPush) and self.auto_ack:
            link.send(frames.Ack(push.text))
            self.out(f"[info] sent ok {push.text}")

    def link_lost(self, link: ServerLink, reason) -> None:
        if self._quitting and self.outcome is None:
            # The server closed after our exit (or its bye): that is the end, not a loss.
            self.link = None
            self.finish("quit")
        else:
            super().link_lost(link, reason)

    def retrying(self, why: str, delay: float) -> None:
        self.out(f"[info] not connected ({why}); retrying in {delay:.1f} s")

    def finished(self) -> None:
        if self.outcome == "gave_up" or self.outcome == "tls_failed":
            self.out(f"[error {self.outcome}] {self.detail}")
        self.on_done(self)
