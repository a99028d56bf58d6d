"""Liveness: clients that have gone silent are pinged, and closed when they stay so.

Every ``interval`` seconds (while anyone is connected) one sweep looks at every
connection. Anything a client sends counts as a sign of life: a line, a WebSocket
message or control frame, a ``pong``. So a client that is active in any way is
never pinged, and an old client that knows nothing of pings is never closed for
not answering them as long as it sends something now and then. A client that sent
nothing since the previous sweep is pinged (``ping``; a WebSocket ping frame on a
WebSocket). One that is still silent at the sweep after its second ping (two
missed pongs, as NATS counts them) is told ``ping_timeout`` and closed: between
three and four intervals after it last sent anything.

A connection that cannot be pinged (a line client of the relay profile, whose
strict seed protocol carries nothing but relays) is left alone: its clients are
found out by TCP keepalive when they vanish, and by the relays' first-ack
deadline when they take relays and never ack.
"""

from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from nea.core.dispatch import Handler
from nea.core.peer import Peer
from nea.wire import errors, frames

#: Pings a silent client is sent before it is closed.
MISSED_PONGS = 2


class Liveness:
    """The sweep over ``peers()``; ``reject(peer, error, detail)`` tells and closes one."""

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        peers: Callable[[], Iterable[Peer]],
        reject: Callable[[Peer, errors.ErrorCode, str], None],
    ) -> None:
        """``interval``: seconds between sweeps (0: no pings, nobody is closed for silence)."""
        self.interval = interval
        self.peers = peers
        self.reject = reject
        #: Each peer seen at the last sweep: its bytes read by then, and pings unanswered.
        self._seen: dict[Peer, tuple[int, int]] = {}
        self._loop = LoopingCall(self.sweep)
        self._loop.clock = clock

    def handlers(self) -> dict[type, Handler]:
        """``ping`` is answered ``pong``; a ``pong`` needs no answer, hearing it is all that
        counts (`nea.core.dispatch`)."""
        return {
            frames.Ping: lambda peer, r: peer.push(frames.PongPush()),
            frames.Pong: lambda peer, r: None,
        }

    def joined(self) -> None:
        """Someone connected: sweep from now on (the first sweep one interval away)."""
        if self.interval and not self._loop.running:
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        """Nobody is connected, or the instance stops: no sweeps until someone joins."""
        self._seen.clear()
        if self._loop.running:
            self._loop.stop()

    def sweep(self) -> None:
        seen: dict[Peer, tuple[int, int]] = {}
        for peer in list(self.peers()):
            heard = peer.bytes_in
            before = self._seen.get(peer)
            if before is None or before[0] != heard:
                seen[peer] = (heard, 0)
            elif before[1] >= MISSED_PONGS:
                self.reject(
                    peer,
                    errors.PING_TIMEOUT,
                    f"nothing heard for {(MISSED_PONGS + 1) * self.interval:g} s",
                )
            elif peer.ping():
                seen[peer] = (heard, before[1] + 1)
        self._seen = seen
