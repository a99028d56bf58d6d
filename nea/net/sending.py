"""Writing to a TCP connection at once, rather than on the reactor's next poll.

Twisted's TCP transport queues every write: it registers the socket for
writability, sends on the reactor's next poll, then unregisters it. That is two
``epoll_ctl`` calls, a poll and a dozen Python calls per write, whether or not the
socket could have taken the bytes at once, and a socket with nothing queued nearly
always can. A `Sender` hands a write to the kernel at once while the transport's
queue is empty, and queues only what the kernel did not take, behind which every
later write waits its turn until the queue is empty again: order is kept.

To know when that is, the sender is the transport's producer, a pull producer,
which the transport tells each time its queue empties. The one producer that
writes through it (a connection's session) hears what a streaming producer of the
transport would: pause once the queue holds more than the transport's buffer size,
resume once it is empty, stop when the connection is lost.
"""

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IConsumer, IProducer, IPullProducer, IPushProducer
from zope.interface import implementer


@implementer(IConsumer, IPullProducer)
class Sender:
    """Writes to ``transport`` (a TCP connection), at once where it can; see the module
    docstring. Its producer unregisters before the connection is closed, as a
    transport's own producer must: the sender then lets go of the transport too, so
    that ``loseConnection`` waits for the queue and no longer."""

    __slots__ = ("transport", "producer", "_queued", "_paused", "_attached")

    def __init__(self, transport: FileDescriptor) -> None:
        self.transport = transport
        self.producer: IPushProducer | None = None
        #: Bytes handed to the transport's queue since it was last empty.
        self._queued = 0
        self._paused = False
        #: Registered with the transport, whose queue it follows.
        self._attached = True
        transport.registerProducer(self, False)  # (which resumes it at once: nothing queued)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if not self._queued and self._attached and not transport.disconnecting:
            sent = transport.writeSomeData(data)
            if sent == len(data):
                return
            if isinstance(sent, int):
                data = data[sent:]
            # (else the connection is lost: the transport drops the rest and finds out)
        self._queued += len(data)
        transport.write(data)
        if self._queued > transport.bufferSize and not self._paused:
            self._paused = True
            if self.producer is not None:
                self.producer.pauseProducing()

    # ---- IPullProducer: the transport's side ----

    def resumeProducing(self) -> None:
        """The transport's queue is empty."""
        self._queued = 0
        if self._paused:
            self._paused = False
            if self.producer is not None:
                self.producer.resumeProducing()

    def stopProducing(self) -> None:
        """The connection is lost."""
        self._attached = False
        if self.producer is not None:
            self.producer.stopProducing()

    # ---- IConsumer: its producer's side ----

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if not streaming or not IPushProducer.providedBy(producer):
            raise ValueError("a Sender takes a streaming (push) producer only")
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None
        if self._attached:
            self._attached = False
            self.transport.unregisterProducer()


def sender_for(transport) -> IConsumer:
    """A `Sender` on ``transport`` if it is a TCP connection of Twisted's own (a file
    descriptor that writes to its socket); else the transport itself (a TLS layer, a
    wrapper, a test's)."""
    return Sender(transport) if isinstance(transport, FileDescriptor) else transport
