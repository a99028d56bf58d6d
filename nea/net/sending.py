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

It lets go of the transport (and hands it that producer) when the connection is
to close, or a pull producer is registered through it (twisted.web serving a
file): from then on it writes through the transport's queue, as Twisted would.

A protocol that writes to ``self.transport`` itself (a library's: the Redis
client) sends at once when its factory is wrapped in a `SendingFactory`.
"""

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IConsumer, IProducer, IPullProducer, IPushProducer
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer


@implementer(IConsumer, IPullProducer)
class Sender:
    """Writes to ``transport`` (a TCP connection), at once where it can; see the module
    docstring."""

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
        if self.transport.disconnecting:
            # It closes once its queue is empty and no pull producer is registered (it
            # looks again once one unregisters).
            self._let_go()

    def stopProducing(self) -> None:
        """The connection is lost."""
        self._attached = False
        if self.producer is not None:
            self.producer.stopProducing()
            self.producer = None

    # ---- IConsumer: its producer's side ----

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if self._attached and streaming and IPushProducer.providedBy(producer):
            self.producer = producer
        else:
            self._let_go()
            self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._let_go()
        self.transport.unregisterProducer()

    def _let_go(self) -> None:
        """Write through the transport's queue from now on; its producer is the
        transport's own again."""
        if self._attached:
            self._attached = False
            producer, self.producer = self.producer, None
            self.transport.unregisterProducer()
            if producer is not None:
                if self._paused:
                    producer.resumeProducing()  # (the transport pauses it again if full)
                self.transport.registerProducer(producer, True)


def sender_for(transport) -> IConsumer:
    """A `Sender` on ``transport`` if it is a TCP connection of Twisted's own (a file
    descriptor that writes to its socket); else the transport itself (a TLS layer, a
    wrapper, a test's)."""
    return Sender(transport) if isinstance(transport, FileDescriptor) else transport


class SendingWrapper(ProtocolWrapper):
    """The transport of the protocol it wraps, whose writes (and producer) go through
    ``output``: a `Sender` on a TCP connection (`sender_for`)."""

    output: IConsumer

    def makeConnection(self, transport) -> None:
        self.output = sender_for(transport)
        super().makeConnection(transport)

    def write(self, data: bytes) -> None:
        self.output.write(data)

    def writeSequence(self, data) -> None:
        self.output.write(b"".join(data))

    def registerProducer(self, producer, streaming: bool) -> None:
        self.output.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.output.unregisterProducer()


class SendingFactory(WrappingFactory):
    """Builds its wrapped factory's protocols, each in a `SendingWrapper` (which a
    connection attempt's result is: the protocol is its ``wrappedProtocol``)."""

    protocol = SendingWrapper
    noisy = False
