"""The server side of nea's TLS: a memory-BIO TLS layer between TCP and a nea protocol.

Twisted's own TLS wrapper answers a peer's close_notify by shutting down at once,
discarding whatever the application still had to say, and it connects the
application protocol at TCP accept, before the handshake. nea needs the
opposite on both counts:

- the wrapped protocol is connected only once the handshake has completed, so a
  socket that never finishes it never takes a client slot, gets a push or is
  drawn as a relay target;
- a close_notify is an end of stream like a TCP FIN (TLS 1.3 semantics): the
  wrapped protocol, if it is half-closeable, hears ``readConnectionLost`` and may
  still write its last replies before it closes;
- a bare TCP FIN after the handshake (a peer that skips close_notify) is an
  end of stream too, not a reason to drop the answers still being written;
- an unfinished handshake is cut off a deadline after accept, and a
  `HandshakeGate` bounds the handshakes in progress: past the bound a new
  connection waits for its turn, newest first. Work spent on clients that give
  up before it completes is what collapses goodput under overload.

Output goes straight through to the TCP transport after encryption (through
what the factory's ``output`` makes of it: the server sends at once where it
can), so the TCP transport's own buffer is the one that fills when a peer stops
reading, and a producer registered here is registered there. OpenSSL takes at
most one record (16 KiB) of plaintext per ``send``: `write` loops until every
byte is taken, and keeps in order whatever OpenSSL cannot take before it has
read from the peer.
"""

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import attrs
from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet import interfaces
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import AcceptableCiphers, Certificate, CertificateOptions, TLSVersion
from twisted.python.failure import Failure
from zope.interface import implementer

#: How much plaintext one ``recv`` may return; larger reads just loop.
_READ_SIZE = 64 * 1024


class CertificateError(ValueError):
    """A server key, certificate or chain file is missing, unreadable or not PEM."""


def openssl_reason(error: Exception) -> str:
    """OpenSSL's reasons from one of its errors, without pyOpenSSL's tuples."""
    entries = error.args[0] if error.args and isinstance(error.args[0], list) else []
    reasons = [entry[-1] for entry in entries if isinstance(entry, tuple) and entry[-1]]
    return ", ".join(reasons) or str(error)


def _load(path: Path, what: str, load):
    try:
        return load(path.read_bytes())
    except OSError as e:
        raise CertificateError(f"cannot read {path} ({what}): {e.strerror}") from None
    except (crypto.Error, ValueError) as e:
        raise CertificateError(f"{path} is not a PEM {what} ({openssl_reason(e)})") from None


#: TLS 1.2 suites offered: forward secret (ECDHE) and authenticated encryption only.
#: (TLS 1.3 has nothing else.) OpenSSL's default groups are kept, so the hybrid
#: post-quantum X25519MLKEM768 is offered wherever the OpenSSL build has it.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


@attrs.frozen
class TLSFiles:
    """What a TLS listener serves, and whom it asks for a certificate."""

    private_key: Path
    certificate: Path
    chain: Path | None = None
    #: Clients must present a certificate signed by this CA (mutual TLS)...
    client_ca: Path | None = None
    #: ...unless this is False: then a certificate is asked for, not required.
    client_cert_required: bool = True
    #: "1.2" or "1.3": the oldest protocol version accepted.
    min_version: str = "1.2"


def server_context(files: TLSFiles) -> SSL.Context:
    """The OpenSSL context a TLS listener serves ``files`` with; `CertificateError` if it cannot."""
    verify: dict[str, Any] = {}
    if files.client_ca is not None:
        verify = dict(
            verify=True,
            caCerts=[c.original for c in _load(files.client_ca, "client CA", _pem_chain)],
            requireCertificate=files.client_cert_required,
        )
    options = CertificateOptions(
        privateKey=_load(files.private_key, "private key", _pem_key),
        certificate=_load(files.certificate, "certificate", Certificate.loadPEM).original,
        extraCertChain=[c.original for c in _load(files.chain, "certificate chain", _pem_chain)]
        if files.chain
        else None,
        raiseMinimumTo=_VERSIONS[files.min_version],
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(TLS12_CIPHERS),
        **verify,
    )
    try:
        context = options.getContext()
    except SSL.Error as e:
        raise CertificateError(
            f"the private key {files.private_key} does not match the "
            f"certificate {files.certificate} ({openssl_reason(e)})"
        ) from None
    # A renegotiation costs the server a handshake's work at the client's whim, and is
    # the only way a write could have to wait for the peer: TLS 1.3 has none.
    context.set_options(SSL.OP_NO_RENEGOTIATION)
    return context


class ContextSource:
    """The context that new connections get, rebuilt from its files on `reload`.

    Connections already up keep the context they started with; a reload that
    fails raises `CertificateError` and leaves the current context in place.
    """

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        self.current = server_context(files)

    def __call__(self) -> SSL.Context:
        return self.current

    def reload(self) -> None:
        self.current = server_context(self.files)


def peer_identity(certificate) -> str | None:
    """A verified client certificate's identity: its subject CN, else its first DNS or URI name."""
    if certificate is None:
        return None
    cert = certificate.to_cryptography()
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if names:
        return str(names[0].value)
    try:
        alternatives = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for kind in (x509.DNSName, x509.UniformResourceIdentifier):
        found = alternatives.get_values_for_type(kind)
        if found:
            return found[0]
    return None


def _pem_key(data: bytes) -> crypto.PKey:
    return crypto.load_privatekey(crypto.FILETYPE_PEM, data)


def _pem_chain(data: bytes) -> list[Certificate]:
    marker = b"-----END CERTIFICATE-----"
    blocks = [b + marker for b in data.split(marker) if b.strip()]
    if not blocks:
        raise ValueError("no certificate in it")
    return [Certificate.loadPEM(b) for b in blocks]


#: A TLS record: 5 header bytes, the last two its length; at most 2**14 + 2048 more.
_RECORD_HEADER = 5
_MAX_RECORD = 2**14 + 2048


def _record_complete(data: bytearray) -> bool:
    """Whether ``data`` holds a whole first TLS record (or cannot be one: then let
    OpenSSL say so)."""
    if len(data) < _RECORD_HEADER:
        return False
    length = int.from_bytes(data[3:5], "big")
    return len(data) >= _RECORD_HEADER + length or length > _MAX_RECORD


@attrs.define
class HandshakeStats:
    """What the TLS listeners have seen; read by status and metrics."""

    #: Accepted TLS connections whose handshake has not completed (silent ones included).
    unfinished: int = 0
    #: Handshakes under way now (their first record has arrived).
    in_progress: int = 0
    #: Accepted connections waiting for their turn to handshake.
    waiting: int = 0
    completed: int = 0
    timed_out: int = 0
    failed: int = 0


class HandshakeGate:
    """At most ``limit`` handshakes in progress (0: no limit); the others wait, newest first.

    Measured (docs/benchmarks.rst): pausing the listening ports instead fills the
    kernel's backlog, whose dropped SYNs cost clients seconds of retransmits, and
    serving the oldest waiter first spends the server's work on clients about to
    give up. So connections are always accepted, a waiting one is still read (a
    client that gave up is noticed and leaves the queue at once), and a freed
    place goes to the newest waiter: under overload the clients served are the
    fresh ones, whose handshake completes before they give up.
    """

    def __init__(self, limit: int = 0, stats: HandshakeStats | None = None) -> None:
        self.limit = limit
        self.stats = stats or HandshakeStats()
        #: Waiting connections in arrival order (a dict pops its newest entry first).
        self._waiting: dict = {}

    def request(self, protocol: "TLSServerProtocol") -> bool:
        """True if ``protocol`` may handshake now; else it waits and `begin` comes later."""
        if self.limit and self.stats.in_progress >= self.limit:
            self._waiting[protocol] = None
            self.stats.waiting += 1
            return False
        self.stats.in_progress += 1
        return True

    def withdraw(self, protocol: "TLSServerProtocol") -> None:
        """A waiting connection went away before its turn."""
        if self._waiting.pop(protocol, False) is None:
            self.stats.waiting -= 1

    def ended(self) -> None:
        """A handshake in progress ended, however; the newest waiter begins."""
        self.stats.in_progress -= 1
        while self._waiting and self.stats.in_progress < self.limit:
            protocol, _ = self._waiting.popitem()
            self.stats.waiting -= 1
            self.stats.in_progress += 1
            protocol.begin()


class Phase(enum.Enum):
    """Where one TLS connection is in its life; only `TLSServerProtocol._to` moves it.

    ACCEPTED -> REFUSED (admission said no), or -> GATHERING_HELLO (its first record)
    -> [QUEUED (a turn at the gate)] -> HANDSHAKING -> ESTABLISHED (the wrapped
    protocol is connected) -> CLOSED (the TCP connection is lost). Before ESTABLISHED,
    EXPIRED (the deadline passed: aborted) or CLOSED end it. The three phases of an
    unfinished handshake hold its deadline and its count; HANDSHAKING holds a place
    at the gate and QUEUED a place in its queue.
    """

    ACCEPTED = "accepted"
    REFUSED = "refused"
    GATHERING_HELLO = "gathering hello"
    QUEUED = "queued"
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    EXPIRED = "expired"
    CLOSED = "closed"


#: The phases of a handshake that has neither completed nor been given up.
_UNFINISHED = frozenset({Phase.GATHERING_HELLO, Phase.QUEUED, Phase.HANDSHAKING})
#: What every read and write compares with: a module name costs a tenth of the lookup
#: of an Enum class's attribute (about 0.15 us on Python 3.11).
_ESTABLISHED, _CLOSED = Phase.ESTABLISHED, Phase.CLOSED


@implementer(
    interfaces.ITransport,
    interfaces.ITCPTransport,
    interfaces.ISSLTransport,
    interfaces.IConsumer,
    interfaces.IHalfCloseableProtocol,
)
class TLSServerProtocol(Protocol):
    """TLS over the TCP connection it is given; the wrapped protocol sees plaintext.

    It is also the wrapped protocol's transport. Its life is a `Phase`; once
    established, the two directions of the stream end apart (TLS half-close), so
    each has its own fact: ``_read_closed`` (the peer's end of stream) and
    ``_write_closed`` (our close_notify, sent once ``_unsent`` is out).
    """

    transport: interfaces.ITCPTransport

    def __init__(self, factory: "TLSServerFactory", wrapped: Protocol) -> None:
        self.factory = factory
        self.wrapped = wrapped
        self.disconnecting = False
        self.phase = Phase.ACCEPTED
        self._tls: SSL.Connection  # from connectionMade, once admitted
        self._output: interfaces.IConsumer  # likewise (`TLSServerFactory`)
        #: The first TLS record, gathered until complete; emptied once past it.
        self._hello = bytearray()
        self._deadline = None
        self._read_closed = False
        self._write_closed = False
        #: Plaintext OpenSSL could not take yet (it must read first), in order.
        self._unsent = bytearray()

    def _to(self, phase: Phase) -> None:
        """Move to ``phase``: an unfinished handshake starts its deadline and count as it
        begins, and gives back what its phase held as it ends, however it ends."""
        left, self.phase = self.phase, phase
        factory = self.factory
        if left is Phase.ACCEPTED and phase is Phase.GATHERING_HELLO:
            factory.gate.stats.unfinished += 1
            if factory.handshake_timeout:
                self._deadline = factory.clock.callLater(factory.handshake_timeout, self._expired)
        elif left in _UNFINISHED and phase not in _UNFINISHED:
            if self._deadline is not None and self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
            factory.gate.stats.unfinished -= 1
            if left is Phase.HANDSHAKING:
                factory.gate.ended()
            elif left is Phase.QUEUED:
                factory.gate.withdraw(self)

    # ---- the TCP side ----

    def connectionMade(self) -> None:
        factory = self.factory
        if not factory.admission.admit(self.transport):
            self._to(Phase.REFUSED)
            return
        self._output = factory.output(self.transport)
        self._tls = SSL.Connection(factory.context(), None)
        self._tls.set_accept_state()
        self._to(Phase.GATHERING_HELLO)

    def dataReceived(self, data: bytes) -> None:
        phase = self.phase
        if phase is _ESTABLISHED:
            if not self._read_closed:
                self._tls.bio_write(data)
                self._receive()
        elif phase is Phase.HANDSHAKING:
            self._tls.bio_write(data)
            if self._handshake():
                self._receive()
        elif phase is Phase.GATHERING_HELLO or phase is Phase.QUEUED:
            self._gather_hello(data)
        # Refused, expired or closed: nothing more is read.

    def _gather_hello(self, data: bytes) -> None:
        """Wait for the whole first record before the handshake takes a turn at the gate.

        Silent sockets and half-sent ClientHellos cost no work, so they must not
        hold a place that a real handshake needs; the deadline closes them.
        """
        hello = self._hello
        hello += data
        if len(hello) > 2 * _MAX_RECORD:  # a client does not talk before the server answers
            self.transport.abortConnection()
            return
        if self.phase is Phase.QUEUED or not _record_complete(hello):
            return
        if self.factory.gate.request(self):
            self.begin()
        else:
            self._to(Phase.QUEUED)  # still read: if the client gives up, it leaves the queue

    def begin(self) -> None:
        """Start the handshake with what was gathered (the gate may call this later)."""
        self._to(Phase.HANDSHAKING)
        hello, self._hello = bytes(self._hello), bytearray()
        self.dataReceived(hello)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        left = self.phase
        if left is not Phase.ACCEPTED and left is not Phase.REFUSED:
            self.factory.admission.release(self.transport)
        self._to(Phase.CLOSED)
        if left is Phase.ESTABLISHED:
            self.wrapped.connectionLost(reason)

    def readConnectionLost(self) -> None:
        """A bare TCP FIN: after the handshake, the peer's end of stream (as close_notify)."""
        if self.phase is Phase.ESTABLISHED:
            if not self._read_closed:
                self._peer_closed()
        elif self.phase is not Phase.CLOSED:
            self.transport.abortConnection()

    def writeConnectionLost(self) -> None:
        """Not called: the TCP side is never half-closed from here."""

    # ---- the handshake ----

    def _handshake(self) -> bool:
        """Advance the handshake; True once it has completed."""
        try:
            self._tls.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        except SSL.Error as e:
            self.factory.gate.stats.failed += 1
            self._fail(e)  # the gate's place is given back when the connection is lost
            return False
        self._to(Phase.ESTABLISHED)
        self.factory.gate.stats.completed += 1
        self._flush()
        self.wrapped.makeConnection(self)
        handshake_completed = getattr(self.wrapped, "handshakeCompleted", None)
        if handshake_completed is not None and not self.disconnecting:
            handshake_completed()
        return self.phase is not Phase.CLOSED

    def _expired(self) -> None:
        """No completed handshake within the deadline of accept (waiting included)."""
        self._deadline = None
        self.factory.gate.stats.timed_out += 1
        self._to(Phase.EXPIRED)
        self.transport.abortConnection()

    # ---- reading ----

    def _receive(self) -> None:
        while not (
            self.phase is _CLOSED
            or self._read_closed
            or self.disconnecting
            and self._write_closed
            and not self._unsent
        ):
            try:
                data = self._tls.recv(_READ_SIZE)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._peer_closed()
                break
            except SSL.Error as e:
                self._fail(e)
                return
            self.wrapped.dataReceived(data)
        if self._unsent and self.phase is not _CLOSED:
            self._send_unsent()
        if self.phase is not _CLOSED:
            self._flush()

    def _peer_closed(self) -> None:
        """close_notify: the peer sends no more; it may still read our answers."""
        self._read_closed = True
        if interfaces.IHalfCloseableProtocol.providedBy(self.wrapped):
            self.wrapped.readConnectionLost()
        else:
            self.loseConnection()

    def _fail(self, error: SSL.Error) -> None:
        # Whatever alert OpenSSL queued (e.g. handshake_failure) goes out first.
        self._flush()
        if self.phase is Phase.ESTABLISHED:
            self._read_closed = True
        self.transport.loseConnection()

    # ---- writing (the wrapped protocol's transport) ----

    def _flush(self) -> None:
        chunks = []
        while True:
            try:
                chunks.append(self._tls.bio_read(_READ_SIZE))
            except SSL.WantReadError:
                break
        if chunks:
            self._output.write(b"".join(chunks))

    def write(self, data: bytes) -> None:
        if self._write_closed or self.phase is _CLOSED or not data:
            return
        if self._unsent:
            self._unsent += data  # behind what waits: order is kept
            return
        sent = self._send(memoryview(data))
        if sent < len(data):
            self._unsent += data[sent:]
        self._flush()

    def _send(self, data: memoryview) -> int:
        """Hand ``data`` to OpenSSL until it is all taken or OpenSSL must read first;
        how many bytes it took."""
        sent = 0
        try:
            while sent < len(data):
                sent += self._tls.send(data[sent:])
        except SSL.WantReadError:
            pass
        except SSL.Error as e:
            self._fail(e)
        return sent

    def _send_unsent(self) -> None:
        """OpenSSL has read: hand it what waited, then the close that waited behind it."""
        unsent = self._unsent
        with memoryview(unsent) as view:
            taken = self._send(view)
        del unsent[:taken]
        if unsent or not self._write_closed:
            return
        self._shutdown()
        if self.disconnecting:
            self.transport.loseConnection()

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """Send close_notify; keep reading (TLS 1.3 half-close)."""
        if self._write_closed or self.phase is Phase.CLOSED:
            return
        self._write_closed = True
        if not self._unsent:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            self._tls.shutdown()
        except SSL.Error:
            pass
        self._flush()

    def loseConnection(self) -> None:
        if self.disconnecting or self.phase is Phase.CLOSED:
            return
        self.disconnecting = True
        self.loseWriteConnection()
        if not self._unsent:
            self.transport.loseConnection()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._write_closed = True
        self.transport.abortConnection()

    # ---- the rest of the transport, from the TCP connection ----

    def pauseProducing(self) -> None:
        """Stop reading from the peer (the wrapped protocol throttles its input)."""
        _producer(self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        _producer(self.transport).resumeProducing()

    def registerProducer(self, producer, streaming: bool) -> None:
        self._output.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._output.unregisterProducer()

    def getPeer(self):
        return self.transport.getPeer()

    def getHost(self):
        return self.transport.getHost()

    def getPeerCertificate(self):
        return self._tls.get_peer_certificate() if self.phase is Phase.ESTABLISHED else None

    def getTcpNoDelay(self) -> bool:
        return self.transport.getTcpNoDelay()

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.transport.setTcpNoDelay(enabled)

    def getTcpKeepAlive(self) -> bool:
        return self.transport.getTcpKeepAlive()

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.transport.setTcpKeepAlive(enabled)

    def getHandle(self):
        return self.transport.getHandle()


def _producer(tcp: interfaces.ITCPTransport) -> interfaces.IPushProducer:
    """A TCP connection is its own producer (twisted.internet.abstract.FileDescriptor)."""
    return cast(interfaces.IPushProducer, tcp)


def _consumer(tcp: interfaces.ITCPTransport) -> interfaces.IConsumer:
    """A TCP connection is its own consumer (twisted.internet.abstract.FileDescriptor)."""
    return cast(interfaces.IConsumer, tcp)


class TLSServerFactory(Factory):
    """Wraps each connection ``wrapped`` builds in server-side TLS.

    ``context`` returns the `OpenSSL.SSL.Context` for a new connection (called
    per connection, so a reload takes effect for newcomers only). ``admission``
    (`nea.server.admission.Admission`-like: ``admit``/``release`` of a transport)
    sees every accepted socket first; ``gate`` bounds handshakes in progress and
    may be shared by several listeners. ``output`` gives, for an admitted TCP
    connection, what its encrypted output is written to and its producers are
    registered with (the connection itself unless given).
    """

    noisy = False

    def __init__(
        self,
        wrapped: Factory[Protocol],
        context: Callable[[], SSL.Context],
        clock: IReactorTime,
        admission,
        gate: HandshakeGate,
        handshake_timeout: float = 0.0,
        output: Callable[[interfaces.ITCPTransport], interfaces.IConsumer] | None = None,
    ) -> None:
        self.wrapped = wrapped
        self.context = context
        self.clock = clock
        self.admission = admission
        self.gate = gate
        self.handshake_timeout = handshake_timeout
        self.output = output or _consumer

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr) -> TLSServerProtocol | None:
        inner = self.wrapped.buildProtocol(addr)
        if inner is None:
            return None
        return TLSServerProtocol(self, inner)
