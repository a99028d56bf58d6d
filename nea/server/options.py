"""``twistd nea-server`` command-line options: every knob, typed and documented."""

import math
import os
import socket
import uuid
from pathlib import Path

from twisted.python import usage

from nea.cluster.batch import DEFAULT_BATCH_INTERVAL, MAX_BATCH_INTERVAL
from nea.cluster.names import RedisAddress
from nea.core.chat import DEFAULT_ON_JOIN
from nea.core.permissions import parse_anonymous
from nea.core.tokens import TokenVerifier
from nea.http.api import DEFAULT_RELAY_TIMEOUT
from nea.http.auth import read_token_file
from nea.http.hosts import AllowedHosts, parse_allowed_hosts
from nea.http.limits import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_ADDRESS,
    DEFAULT_REQUEST_TIMEOUT,
)
from nea.net.listening import DEFAULT_BACKLOG
from nea.server.chatrate import DEFAULT_CHAT_BYTES_RATE, DEFAULT_CHAT_RATE
from nea.server.connection import DEFAULT_MAX_OUTBOUND, DEFAULT_MAX_RATE
from nea.server.listeners import Listen, default_listen
from nea.server.service import DRAIN_GRACE
from nea.server.settings import read_policy
from nea.server.websocket import parse_origins
from nea.store.url import DEFAULT_STORE
from nea.wire.codec import DEFAULT_MAX_LINE

#: Lines of chat history kept by default (``--history-max``).
DEFAULT_HISTORY_MAX = 100_000
#: Bytes of chat text kept by default (``--history-max-bytes``).
DEFAULT_HISTORY_MAX_BYTES = 256 * 1024 * 1024


def _positive(kind):
    def convert(value: str):
        number = kind(value)
        if not number > 0:  # (nor is NaN)
            raise ValueError(f"must be positive, got {value}")
        return number

    convert.coerceDoc = f"A positive {kind.__name__}."
    return convert


def _non_negative(kind, off: str, at_most: float = math.inf):
    bounded = at_most < math.inf
    allowed = f"be from 0 to {at_most:g}" if bounded else "not be negative"

    def convert(value: str):
        number = kind(value)
        if not 0 <= number <= at_most:  # (nor is NaN)
            raise ValueError(f"must {allowed}, got {value}")
        return number

    upper = f" and <= {at_most:g}" if bounded else ""
    convert.coerceDoc = f"A {kind.__name__} >= 0{upper}; 0 {off}."  # type: ignore[attr-defined]  # usage.Options shows it in --help
    return convert


def _choice(*allowed: str):
    def convert(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    convert.coerceDoc = f"One of: {', '.join(allowed)}."  # type: ignore[attr-defined]  # usage.Options shows it in --help
    return convert


def _workers(value: str) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    return _positive(int)(value)


_workers.coerceDoc = "A positive integer, or auto: one per core."  # type: ignore[attr-defined]  # usage.Options shows it in --help


def _fds(value: str) -> tuple[int, ...]:
    return tuple(int(fd) for fd in value.split(","))


def _redis_address(value: str) -> RedisAddress:
    try:
        return RedisAddress.parse(value)
    except ValueError as e:
        raise ValueError(f"{e}; e.g. --redis redis://127.0.0.1:6379/0") from None


_redis_address.coerceDoc = "A URL: redis://host[:port][/db]."  # type: ignore[attr-defined]  # usage.Options shows it in --help


DEFAULT_HTTP = "tcp:3000:interface=127.0.0.1"
#: Where development certificates are generated, relative to the directory nea-server starts in.
DEFAULT_DEV_CERTS = "certs"
#: Off: no gate value measured so far did better than none (docs/benchmarks.rst).
DEFAULT_MAX_HANDSHAKES = 0


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run nea, a TLS messaging daemon: date pushes, reverse, acknowledged relays and chat. "
        "With no options it listens with TLS on port 3443 (profile nea), generating development "
        "certificates in ./certs (--dev-certs) on first run."
    )
    optFlags = [
        [
            "console",
            None,
            "Broadcast every line typed on stdin to all chat-capable clients (use with twistd -n).",
        ],
    ]
    optParameters = [
        [
            "max-clients",
            None,
            100,
            "Most clients this instance serves at once; the next is told 'server_full' and closed.",
            _positive(int),
        ],
        ["date-interval", None, 10.0, "Seconds between date pushes.", _positive(float)],
        [
            "max-line",
            None,
            DEFAULT_MAX_LINE,
            "Longest accepted line in bytes; a longer one is an error and ends the connection.",
            _positive(int),
        ],
        [
            "max-outbound",
            None,
            DEFAULT_MAX_OUTBOUND,
            "Bytes a client that stopped reading "
            "may have queued before it is dropped as a slow consumer.",
            _positive(int),
        ],
        [
            "max-pending",
            None,
            1000,
            "Relays one client may wait for at once (the next is "
            "answered 'too_many_pending'), and deliveries one may hold unacknowledged before "
            "it is no longer drawn as a relay target.",
            _positive(int),
        ],
        [
            "ack-timeout",
            None,
            5.0,
            "Seconds a relay target has to ack a delivery; past it the "
            "text is drawn again for another client, and that target is not drawn until it acks.",
            _non_negative(float, "means as long as the target stays connected"),
        ],
        [
            "first-ack-timeout",
            None,
            0.5,
            "Seconds a relay target that has never sent a "
            "byte has to ack (when shorter than --ack-timeout); past it the text is drawn again "
            "and the target is withdrawn until it acks, so idle clients do not hold relays up "
            "for --ack-timeout each.",
            _non_negative(float, "means --ack-timeout"),
        ],
        [
            "max-rate",
            None,
            DEFAULT_MAX_RATE,
            "Lines a second one client may send on average "
            "(bursts of twice that); past it nea stops reading that client for a while: nothing "
            "is lost, nothing is answered with an error.",
            _non_negative(float, "means no limit"),
        ],
        [
            "chat-rate",
            None,
            DEFAULT_CHAT_RATE,
            "Chat lines a second one client may say on "
            "average (bursts of twice that), apart from --max-rate: each line goes to every chat "
            "client. Past it nea stops reading that client until the line fits: nothing is lost.",
            _non_negative(float, "means no limit"),
        ],
        [
            "chat-bytes-rate",
            None,
            DEFAULT_CHAT_BYTES_RATE,
            "Bytes of chat lines a second one "
            "client may say on average (bursts of twice that, and at least one --max-line), held "
            "the same way as --chat-rate.",
            _non_negative(float, "means no limit"),
        ],
        [
            "handshake-timeout",
            None,
            10.0,
            "Seconds from accept within which a TLS client must "
            "complete its handshake, waiting for its turn included; then it is closed.",
            _non_negative(float, "means no deadline"),
        ],
        [
            "max-handshakes",
            None,
            DEFAULT_MAX_HANDSHAKES,
            "TLS handshakes in progress at once, "
            "all TLS listeners together; past it newcomers wait, and a freed place goes to the "
            "newest waiter (fresh clients are served before they give up).",
            _non_negative(int, "means no limit"),
        ],
        [
            "ping-interval",
            None,
            30.0,
            "Seconds between liveness sweeps: a client that sent "
            "nothing (no line, no WebSocket frame) since the last sweep is pinged ('ping'; a "
            "WebSocket ping frame), and one still silent at the sweep after its second ping is "
            "told 'ping_timeout' and closed. Relay-profile line clients are never pinged.",
            _non_negative(float, "turns pings off"),
        ],
        [
            "keepalive",
            None,
            60.0,
            "Seconds of silence after which the kernel probes a "
            "client (TCP keepalive), so a peer that vanished is noticed.",
            _non_negative(float, "turns keepalive off"),
        ],
        [
            "max-clients-per-ip",
            None,
            0,
            "Connections one IP address may hold at once, "
            "handshakes included; the next is closed at accept.",
            _non_negative(int, "means no limit"),
        ],
        [
            "tls-client-ca",
            None,
            None,
            "CA file (PEM): every TLS listener asks clients for a "
            "certificate signed by it (mutual TLS); the verified identity shows in /connections.",
        ],
        [
            "tls-client-cert",
            None,
            "required",
            "With --tls-client-ca: 'required' (a client "
            "without a valid certificate fails the handshake) or 'optional' (one is asked for; "
            "a client without one is still served).",
            _choice("required", "optional"),
        ],
        [
            "tls-min-version",
            None,
            "1.2",
            "Oldest TLS version accepted: 1.2 or 1.3 (TLS 1.2 "
            "offers only ECDHE with AES-GCM or ChaCha20-Poly1305).",
            _choice("1.2", "1.3"),
        ],
        [
            "backlog",
            None,
            DEFAULT_BACKLOG,
            "listen(2) backlog for tcp and ssl listeners (unless the endpoint sets backlog=).",
            _positive(int),
        ],
        [
            "drain-timeout",
            None,
            5.0,
            "Seconds over which a stopping server tells its clients "
            "'shutting_down' and closes them, in batches spread evenly, so that they do not "
            "all reconnect elsewhere at once; a client still connected then (and at least "
            f"{DRAIN_GRACE:g} s after it was told) is dropped.",
            _non_negative(float, "closes them all at once"),
        ],
        [
            "instance-id",
            None,
            None,
            "This instance's name in status and in the cluster "
            "(default: hostname and a random suffix).",
        ],
        [
            "dev-certs",
            None,
            DEFAULT_DEV_CERTS,
            "Directory where missing development "
            "certificates are generated at start-up when an ssl listener names files inside it "
            "(the default listener does); a relative path is taken from the directory nea-server "
            "starts in, once, as the options are read.",
        ],
        [
            "redis",
            None,
            None,
            "Join a cluster through Redis at this URL (default port "
            "6379, db 0); without it this instance is the whole server",
            _redis_address,
        ],
        [
            "workers",
            None,
            1,
            "Serve with this many worker processes under one supervisor: they share the "
            "listening sockets (--listen and --http) and join one cluster, so --redis is "
            "required above 1; each is named INSTANCE-ID-wK. SIGTERM and SIGHUP go to every "
            "worker; a worker that dies is restarted.",
            _workers,
        ],
        [
            "inherited-fds",
            None,
            None,
            "Set by a --workers supervisor for its workers, not by hand: the listening sockets, "
            "one per --listen in order, then --http's, that the worker adopts.",
            _fds,
        ],
        [
            "cluster-name",
            None,
            "nea",
            "Prefix of the cluster's Redis keys and channels; "
            "clusters sharing one Redis need different names.",
        ],
        [
            "heartbeat",
            None,
            1.0,
            "Seconds between cluster heartbeats; a member silent for 3 heartbeats is given up.",
            _positive(float),
        ],
        [
            "cluster-batch-interval",
            None,
            DEFAULT_BATCH_INTERVAL,
            "Least seconds between two sendings of this instance's messages to the others "
            "(a PUBLISH per instance it has messages for) while it is busy: when the last "
            "sending held more than one message, what comes within this interval of it waits "
            "for the rest and goes with the others. A lone message (a request, its answer) "
            "never waits, so this delays messages only under load, by at most this much; there, "
            "where a reactor turn brings a message or two, it saves the instances much of the "
            "CPU that a crossing costs.",
            _non_negative(
                float, "sends every reactor turn's messages at its end", MAX_BATCH_INTERVAL
            ),
        ],
        [
            "http",
            None,
            DEFAULT_HTTP,
            "Endpoint of the HTTP API (status page, /status, /healthz, "
            "/metrics, /docs, ...), or 'none' for no HTTP API.",
        ],
        # ---- identities and permissions ----
        [
            "jwt-key",
            None,
            None,
            "File with the key that client tokens (JWT: 'auth TOKEN', "
            "?token= on WebSocket, Authorization: Bearer on HTTP) are verified with: a PEM public "
            "key (EC P-256 for ES256, RSA for RS256, Ed25519 for EdDSA) or else an HS256 secret "
            "of at least 32 bytes. Without it no token is accepted.",
        ],
        ["jwt-audience", None, None, "The 'aud' a token must carry (default: not checked)."],
        [
            "permissions",
            None,
            None,
            "JSON file of the permissions of clients without a token: "
            '{"anonymous": {...}, "identities": {"PATTERN": {...}}, "identified": {...}} '
            "(docs/security.rst); read again on SIGHUP.",
        ],
        [
            "anonymous",
            None,
            None,
            "What anonymous clients may do: a comma list of reverse, "
            "relay, chat, register, serve, ask, or none. Default: all of them, or only reverse "
            "when clients are asked for certificates (--tls-client-ca). A permissions file's "
            "'anonymous' set wins over it.",
            parse_anonymous,
        ],
        [
            "admin-token",
            None,
            None,
            "Bearer token that POST /broadcast and POST /relay require "
            "(prefer --admin-token-file: a command line is visible to other users).",
        ],
        [
            "admin-token-file",
            None,
            None,
            "File holding the admin token (surrounding whitespace "
            "is dropped). `make run` creates and passes certs/admin-token.",
        ],
        [
            "http-access-log",
            None,
            None,
            "Write twisted.web's access log (one line per HTTP "
            "request) to this file; without it requests are not logged.",
        ],
        [
            "http-max-body",
            None,
            DEFAULT_MAX_BODY,
            "Largest HTTP request body in bytes, checked "
            "while it is read: a larger one is answered 413 and its connection closed.",
            _positive(int),
        ],
        [
            "http-request-timeout",
            None,
            DEFAULT_REQUEST_TIMEOUT,
            "Seconds within which an HTTP "
            "request must arrive whole (headers and body), counted from its first line; then its "
            "connection is closed.",
            _positive(float),
        ],
        [
            "http-idle-timeout",
            None,
            DEFAULT_IDLE_TIMEOUT,
            "Seconds an HTTP connection may "
            "wait for its next request's first line, from the accept or the end of the previous "
            "answer (keep-alive); then it is closed.",
            _positive(float),
        ],
        [
            "http-max-connections",
            None,
            DEFAULT_MAX_CONNECTIONS,
            "HTTP API connections open at "
            "once; past it the connection idle for longest is closed to make room, and when none "
            "is idle the new one is closed at accept.",
            _positive(int),
        ],
        [
            "http-max-connections-per-ip",
            None,
            DEFAULT_MAX_PER_ADDRESS,
            "HTTP API connections "
            "one client address may hold at once (0: no limit); past it a new one from that "
            "address closes that address's own longest idle connection, or is closed at accept. "
            "Behind a proxy that connects from one address, set 0.",
            _non_negative(int, "means no limit"),
        ],
        [
            "http-allowed-hosts",
            None,
            None,
            "Comma-separated host names HTTP requests and "
            "WebSocket handshakes from browsers must carry in their Host header (against DNS "
            "rebinding); '*' allows any. Default: localhost, 127.0.0.1, ::1 and the interface "
            "of --http; when --http listens on every interface, any IP address as well.",
            parse_allowed_hosts,
        ],
        [
            "ws-allowed-origins",
            None,
            None,
            "Comma-separated Origin values (e.g. "
            "https://chat.example.com) whose pages may open WebSocket connections, on /ws and "
            "on +ws listeners; '*' allows any. Default: only pages of the host the client "
            "connects to (its Host header). Clients that send no Origin (programs, not "
            "browsers) are always allowed; a refused one gets HTTP 403.",
            parse_origins,
        ],
        # ---- chat history ----
        [
            "store",
            None,
            DEFAULT_STORE,
            "Where chat lines and broadcasts are kept: "
            "sqlite:PATH (one instance; relative to where nea runs), postgresql://USER@HOST/DB "
            "(shared by a cluster), or none (history off).",
        ],
        [
            "history-on-join",
            None,
            DEFAULT_ON_JOIN,
            "Lines of history a chat-profile client is shown when it has given its name.",
            _non_negative(int, "shows none"),
        ],
        [
            "history-max",
            None,
            DEFAULT_HISTORY_MAX,
            "Lines of history kept; older ones are deleted in the background.",
            _non_negative(int, "keeps all"),
        ],
        [
            "history-max-bytes",
            None,
            DEFAULT_HISTORY_MAX_BYTES,
            "Bytes of chat text (names "
            "included) history keeps; older lines are deleted in the background and the space "
            "is given back to the disk (SQLite) or to the table (PostgreSQL).",
            _non_negative(int, "keeps all"),
        ],
        [
            "relay-timeout",
            None,
            DEFAULT_RELAY_TIMEOUT,
            "Seconds POST /relay waits for the ok before it answers 504.",
            _positive(float),
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, value: str) -> None:
        try:
            self["listen"].append(Listen.parse(value))
        except ValueError as e:
            raise usage.UsageError(str(e)) from e

    opt_listen.__doc__ = (
        "[PROFILE[+proxy][+ws]=]ENDPOINT to listen on; repeat for several. PROFILE is nea "
        "(default), relay or chat; +proxy: every connection starts with a PROXY header (v1 or "
        "v2, as HAProxy's send-proxy-v2 sends it, read before TLS), so client addresses and "
        "per-IP limits are the real clients' (no valid header within --handshake-timeout: "
        "closed); +ws: clients speak WebSocket (JSON frames in text messages; wss:// on an "
        "ssl: endpoint), its opening handshake also due within --handshake-timeout. "
        "ENDPOINT is a Twisted endpoint string, e.g. tcp:8000:interface=127.0.0.1, "
        "ssl:3443:privateKey=key.pem:certKey=cert.pem or systemd:domain=INET:index=0. "
        "Default: ssl:3443 with the development certificates of --dev-certs; any --listen "
        "replaces that default listener (add it again to keep it)."
    )

    def postOptions(self) -> None:
        self["dev-certs"] = Path(self["dev-certs"]).resolve()
        if not self["listen"]:
            self["listen"] = [Listen.parse(default_listen(self["dev-certs"]))]
        if self["instance-id"] is None:
            self["instance-id"] = default_instance_id()
        if self["http"].lower() == "none":
            self["http"] = None
        if self["http-allowed-hosts"] is None:
            self["http-allowed-hosts"] = AllowedHosts.default_for(self["http"])
        if self["admin-token-file"] is not None:
            if self["admin-token"] is not None:
                raise usage.UsageError("give --admin-token or --admin-token-file, not both")
            try:
                self["admin-token"] = read_token_file(self["admin-token-file"])
            except OSError as e:
                raise usage.UsageError(
                    f"--admin-token-file {self['admin-token-file']}: cannot read it: "
                    f"{e.strerror}; create it holding the token (mode 0600), e.g. "
                    "python -m nea.http.devtoken FILE"
                ) from None
            except ValueError as e:
                raise usage.UsageError(f"--admin-token-file: {e}; write the token in it") from None
        self._identities()
        if self["workers"] > 1 and self["redis"] is None:
            raise usage.UsageError(
                f"--workers {self['workers']} needs --redis: the workers join one cluster "
                "through it (e.g. --redis redis://127.0.0.1:6379/0), or give --workers 1"
            )
        if self["cluster-batch-interval"] >= self["heartbeat"]:
            # A heartbeat's round trip marks what was published before it as arrived.
            raise usage.UsageError(
                f"--cluster-batch-interval {self['cluster-batch-interval']:g} must be shorter "
                f"than --heartbeat {self['heartbeat']:g}"
            )
        if self["http-access-log"] is not None:
            try:
                open(self["http-access-log"], "a").close()
            except OSError as e:
                raise usage.UsageError(
                    f"--http-access-log {self['http-access-log']}: cannot open it for writing: "
                    f"{e.strerror}"
                ) from None

    def _identities(self) -> None:
        """``policy`` and ``tokens`` from the identity options, or a one-line UsageError."""
        if self["anonymous"] is None and self["tls-client-ca"]:
            self["anonymous"] = parse_anonymous("reverse")  # identities matter here
        try:
            self["policy"] = read_policy(self["permissions"], self["anonymous"])
        except (OSError, ValueError) as e:
            raise usage.UsageError(f"--permissions {self['permissions']}: {e}") from None
        self["tokens"] = None
        if self["jwt-key"] is not None:
            try:
                self["tokens"] = TokenVerifier.from_file(self["jwt-key"], self["jwt-audience"])
            except (OSError, ValueError) as e:
                raise usage.UsageError(f"--jwt-key {self['jwt-key']}: {e}") from None
