"""Clients that answer requests: ``nea-client register NAME`` and ``serve SERVICE``.

Both speak JSON (so a body is any JSON value, and a multi-line answer stays one
frame) and announce themselves again after every reconnect: the server forgets
a name or a membership with the connection that held it. Requests pushed on a
connection are answered on that connection only; once it is lost they are
dropped (the server told the asker ``client_gone``, or re-sent a service request
to another member), never answered on the next one.

``error name_taken_over`` means another client registered the name: the client
ends (outcome "taken_over") instead of taking it back, so two devices with one
name do not keep evicting each other.

- `RegisterClient`: a person answers. Each request is shown; the next line the
  user types answers the oldest unanswered one, or, when it starts with the ID
  of a waiting request and a space, that request.
- `ServeClient`: a shell command answers (see `nea.client.shell`), at most
  ``max_running`` at a time; up to ``max_queued`` more wait, past that a request
  gets an error reply at once.
"""

import collections
import random
from collections.abc import Callable

import attrs

from nea.client.link import ServerLink
from nea.client.redial import DialConfig, Redialer
from nea.client.shell import Outcome, ShellCommand
from nea.wire import codec, errors, frames
from nea.wire.frames import Encoding


class AddressedClient(Redialer):
    """Announces itself (``announcement``) on every ready link and routes its requests.

    ``out`` receives each line to show; ``on_done`` is called once with the client when
    it is over (``outcome`` "closed", "taken_over", "gave_up" or "tls_failed").
    """

    __slots__ = ("announcement", "out", "on_done")

    def __init__(
        self,
        announcement,
        endpoint,
        clock,
        dial: DialConfig,
        out: Callable[[str], None],
        on_done: Callable[["AddressedClient"], None],
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(endpoint, clock, dial, rng)
        self.announcement = announcement
        self.out = out
        self.on_done = on_done

    def ready(self, link: ServerLink) -> None:
        link.send(self.announcement, Encoding.JSON)

    def received(self, link: ServerLink, push: frames.Push) -> None:
        match push:
            case frames.RequestPush():
                self.request(link, push)
            case frames.Registered(name):
                self.out(f"[registered] you are addressable as {name}")
            case frames.Serving(service):
                self.out(f"[serving] you are a member of {service}")
            case frames.ErrorReply(code, message) if code == errors.NAME_TAKEN_OVER.code:
                self.finish("taken_over", f"{message}: another client registered the name")
            case frames.ErrorReply(code, message):
                self.out(f"[error {code}] {message}")

    def reply(self, link: ServerLink, id: str, body: str) -> bool:
        """Answer ``request id`` if its link is still the current one; whether it was sent."""
        if link is not self.link or link.closed_because is not None:
            return False
        link.send(frames.Reply(id, body), Encoding.JSON)
        return True

    def retrying(self, why: str, delay: float) -> None:
        self.out(f"[info] not connected ({why}); retrying in {delay:.1f} s")

    def finished(self) -> None:
        if self.outcome != "closed":
            self.out(f"[error {self.outcome}] {self.detail}")
        self.on_done(self)

    def request(self, link: ServerLink, push: frames.RequestPush) -> None:
        """A request arrived on ``link``."""


class RegisterClient(AddressedClient):
    """``register NAME``; the user answers each request (see the module docstring)."""

    __slots__ = ("_waiting",)

    def __init__(
        self,
        name: str,
        endpoint,
        clock,
        dial: DialConfig,
        out: Callable[[str], None],
        on_done: Callable[["AddressedClient"], None],
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(frames.Register(name), endpoint, clock, dial, out, on_done, rng)
        #: Unanswered requests of the current link, oldest first: id -> link.
        self._waiting: collections.OrderedDict[str, ServerLink] = collections.OrderedDict()

    def request(self, link: ServerLink, push: frames.RequestPush) -> None:
        self._waiting[push.id] = link
        self.out(f"[request {push.id}] {codec.body_text(push.body)}")
        self._show_prompt()

    def user_line(self, line: bytes) -> None:
        """The user typed ``line``: the answer to the oldest request, or to ``ID TEXT``'s."""
        text = line.decode("utf-8", "replace")
        if self.outcome is not None:
            return
        if not self._waiting:
            self.out("[info] no request waits for an answer; line not sent")
            return
        id, _, rest = text.partition(" ")
        if id not in self._waiting:
            id, rest = next(iter(self._waiting)), text
        link = self._waiting.pop(id)
        if self.reply(link, id, rest):
            self.out(f"[info] answered {id}")
        else:
            self.out(f"[info] {id} was lost with its connection; answer not sent")
        self._show_prompt()

    def user_done(self) -> None:
        """The input ended: leave."""
        self.finish("closed")

    def link_lost(self, link: ServerLink, reason) -> None:
        dropped = [id for id, held in self._waiting.items() if held is link]
        for id in dropped:
            del self._waiting[id]
        if dropped and self.outcome is None:
            self.out(f"[info] connection lost; {len(dropped)} unanswered request(s) dropped")
        super().link_lost(link, reason)

    def _show_prompt(self) -> None:
        if self._waiting:
            oldest = next(iter(self._waiting))
            others = (
                f"; {len(self._waiting) - 1} more wait ('ID TEXT' answers one)"
                if len(self._waiting) > 1
                else ""
            )
            self.out(f"[answer] type the answer to {oldest}{others}")


@attrs.frozen
class ServeConfig:
    """How a `ServeClient` runs its command; one value for any number of clients."""

    command: ShellCommand
    #: Commands running at once.
    max_running: int = 8
    #: Requests waiting for a free slot; past this a request is answered with an error.
    max_queued: int = 1000

    def __attrs_post_init__(self) -> None:
        if self.max_running < 1 or self.max_queued < 0:
            raise ValueError("max_running must be at least 1 and max_queued not negative")


#: The start of a reply that reports the command's failure instead of its output.
ERROR_PREFIX = "error: "


class ServeClient(AddressedClient):
    """``serve SERVICE``; each request answered by the command's stdout (module docstring)."""

    __slots__ = ("config", "reactor", "running", "_queue")

    def __init__(
        self,
        service: str,
        config: ServeConfig,
        endpoint,
        reactor,
        dial: DialConfig,
        out: Callable[[str], None],
        on_done: Callable[["AddressedClient"], None],
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(frames.Serve(service), endpoint, reactor, dial, out, on_done, rng)
        self.config = config
        self.reactor = reactor
        #: Commands running now.
        self.running = 0
        self._queue: collections.deque[tuple[ServerLink, frames.RequestPush]] = collections.deque()

    def request(self, link: ServerLink, push: frames.RequestPush) -> None:
        if self.running < self.config.max_running:
            self._start(link, push)
        elif len(self._queue) < self.config.max_queued:
            self._queue.append((link, push))
        else:
            self.out(f"[error busy] {push.id}: {self.config.max_queued} requests queued already")
            self.reply(link, push.id, f"{ERROR_PREFIX}busy: too many requests queued")

    def link_lost(self, link: ServerLink, reason) -> None:
        # Queued requests of a lost link have gone elsewhere: never run them.
        self._queue = collections.deque(item for item in self._queue if item[0] is not link)
        super().link_lost(link, reason)

    def _start(self, link: ServerLink, push: frames.RequestPush) -> None:
        self.running += 1
        stdin = (codec.body_text(push.body) + "\n").encode("utf-8", "replace")
        d = self.config.command.run(self.reactor, stdin)
        d.addCallback(self._ran, link, push.id)

    def _ran(self, outcome: Outcome, link: ServerLink, id: str) -> None:
        self.running -= 1
        if outcome.error is None:
            body = outcome.output
        else:
            self.out(f"[error command] {id}: {outcome.error}")
            body = f"{ERROR_PREFIX}{outcome.error}"
        if not self.reply(link, id, body):
            self.out(f"[info] {id} was lost with its connection; reply dropped")
        while self._queue and self.running < self.config.max_running:
            self._start(*self._queue.popleft())
