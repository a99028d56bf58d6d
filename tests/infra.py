"""Real outside programs for tests: redis-server, haproxy, PostgreSQL, nea-server daemons
and a headless Chromium.

Each listens on 127.0.0.1 on a port the kernel found free, is started by the test
and stopped at cleanup. Readiness is waited for by polling with a deadline, never
by sleeping; a program that dies while we wait fails the test with its output.
"""

import atexit
import glob
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import attrs
import txredisapi
from twisted.internet import defer, error, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.trial import unittest

from nea.client.status import fetch_status
from nea.cluster.redisproto import WholeReads
from tests import support

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
#: Keep the last this many bytes of a program's output, for failure messages.
OUTPUT_TAIL = 64 * 1024


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, below the ephemeral range.

    A port the kernel hands out for ``bind(0)`` is an ephemeral one, which any
    test's outgoing connection may take as its source port before the program
    the port was meant for binds it (seen: "Address already in use"). Below the
    range only another `free_port` can pick it, at random among thousands.
    """
    low = _ephemeral_low()
    for _ in range(100):
        port = _random.randrange(max(1024, low - 12_000), low)
        if port in _given:  # (two picks in a row, before either is bound)
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port found below {low}")


_random = random.Random()
#: Ports this process has handed out.
_given: set[int] = set()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 if it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class _Watcher(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended = defer.Deferred()
        self.output = bytearray()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        del self.output[:-OUTPUT_TAIL]

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value)


class Program:
    """An outside program run by a test."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd=None,
        user: "pwd.struct_passwd | None" = None,
    ) -> None:
        self.argv = argv
        self.env = env if env is not None else dict(os.environ)
        self.cwd = cwd
        self.user = user
        self.watcher: _Watcher | None = None
        self.process = None

    def start(self) -> None:
        self.watcher = _Watcher()
        ids = {"uid": self.user.pw_uid, "gid": self.user.pw_gid} if self.user else {}
        self.process = reactor.spawnProcess(
            self.watcher, self.argv[0], self.argv, self.env, path=self.cwd, **ids
        )

    @property
    def running(self) -> bool:
        return self.watcher is not None and not self.watcher.ended.called

    @property
    def output(self) -> str:
        return bytes(self.watcher.output).decode("utf-8", "replace") if self.watcher else ""

    def signal(self, name: str) -> None:
        if self.running:
            try:  # (Twisted takes only some names; the number works for every signal)
                self.process.signalProcess(getattr(signal, f"SIG{name}"))
            except error.ProcessExitedAlready:
                pass

    @defer.inlineCallbacks
    def stop(self, how: str = "TERM", timeout: float = support.WAIT):
        """Signal the program and wait for it to end (KILL if it does not in time)."""
        if not self.running:
            return
        ended = self.watcher.ended
        self.signal(how)
        try:
            yield watch(ended, timeout)
        except defer.TimeoutError:
            self.signal("KILL")
            yield watch(ended, timeout)

    def kill(self):
        return self.stop("KILL")


def watch(deferred: defer.Deferred, timeout: float) -> defer.Deferred:
    """Wait for ``deferred`` without cancelling it when the wait times out."""
    waiter = defer.Deferred()
    deferred.addBoth(lambda result: waiter.called or waiter.callback(None) or result)
    return waiter.addTimeout(timeout, reactor)


@defer.inlineCallbacks
def wait_listening(program: Program, port: int, timeout: float = support.WAIT):
    """Poll until ``port`` accepts a connection; fail if ``program`` dies first."""
    deadline = reactor.seconds() + timeout
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1)
    while True:
        if not program.running:
            raise AssertionError(f"{program.argv[0]} exited:\n{program.output}")
        try:
            probe = yield endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
        except (error.ConnectError, defer.TimeoutError):
            if reactor.seconds() > deadline:
                raise AssertionError(f"nothing listens on {port} after {timeout} s") from None
            yield support.next_tick(0.05)
        else:
            probe.transport.loseConnection()
            return


class _Listener(WholeReads, txredisapi.SubscriberProtocol):
    """txredisapi's subscriber (not nea's: this one can also unsubscribe), queueing what
    it hears; with whole reads, it sets no timer on the global reactor."""

    heard: defer.DeferredQueue

    def messageReceived(self, pattern, channel, message) -> None:
        self.heard.put(message)


class RedisServer:
    """A throw-away redis-server (no persistence) on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="nea-redis-")
        self.program = Program(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--protected-mode",
                "no",
            ]
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.program.start()
        return wait_listening(self.program, self.port)

    def stop(self):
        return self.program.stop()

    @defer.inlineCallbacks
    def subscribe(self, testcase, channel: str):
        """A connection subscribed to ``channel``: ``heard`` queues what is published there.

        Closed at test end; ``unsubscribe([channel])`` first when Redis must be left clean.
        """
        heard = defer.DeferredQueue()
        factory = protocol.Factory.forProtocol(_Listener)
        factory.noisy = False
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=support.WAIT)
        redis = yield endpoint.connect(factory).addTimeout(support.WAIT, reactor)
        testcase.addCleanup(redis.transport.loseConnection)
        redis.heard = heard
        yield redis.subscribe([channel]).addTimeout(support.WAIT, reactor)
        return redis

    @defer.inlineCallbacks
    def pttl(self, key: str):
        """Milliseconds ``key`` has left to live (-1: no expiry, -2: no such key)."""
        redis = yield txredisapi.Connection("127.0.0.1", self.port, reconnect=False)
        try:
            return (yield redis.execute_command("PTTL", key))
        finally:
            yield redis.disconnect()

    @defer.inlineCallbacks
    def leftovers(self, prefix: str):
        """``(keys, keys_without_ttl, channels)`` under ``prefix`` that are still there."""
        redis = yield txredisapi.Connection("127.0.0.1", self.port, reconnect=False)
        try:
            keys = sorted((yield redis.keys(f"{prefix}:*")))
            ttls = yield defer.gatherResults([redis.execute_command("PTTL", k) for k in keys])
            eternal = [key for key, ttl in zip(keys, ttls, strict=True) if ttl == -1]
            channels = yield redis.execute_command("PUBSUB", "CHANNELS", f"{prefix}:*")
        finally:
            yield redis.disconnect()
        return keys, eternal, sorted(channels)


@defer.inlineCallbacks
def redis_server(testcase) -> RedisServer:
    """A started `RedisServer`, stopped when the test ends."""
    server = RedisServer()
    testcase.addCleanup(server.stop)
    yield server.start()
    return server


class NeaDaemon:
    """nea-server as its own process (so it can be killed), TLS on a free port.

    ``proxied_port`` is a second TLS listener, for HAProxy, that reads a PROXY
    header first; ``port`` is for clients (and status checks) that come directly.
    """

    def __init__(self, instance_id: str, *args: str) -> None:
        self.instance_id = instance_id
        self.port, self.proxied_port = free_port(), free_port()
        d = support.certs()
        files = f"interface=127.0.0.1:privateKey={d}/server-key.pem:certKey={d}/server.pem"
        self.program = Program(
            support.daemon_command(
                "--instance-id",
                instance_id,
                "--listen",
                f"ssl:{self.port}:{files}",
                "--listen",
                f"nea+proxy=ssl:{self.proxied_port}:{files}",
                *args,
            ),
            support.daemon_env(),
            cwd=tempfile.mkdtemp(prefix="nea-daemon-"),
        )

    def start(self):
        self.program.start()
        return self.listening()

    def listening(self):
        return defer.gatherResults(
            [
                wait_listening(self.program, port, timeout=3 * support.WAIT)
                for port in (self.port, self.proxied_port)
            ]
        )

    def stop(self):
        return self.program.stop()

    def kill(self):
        return self.program.kill()


@defer.inlineCallbacks
def nea_daemons(testcase, count: int, *args: str) -> list[NeaDaemon]:
    daemons = [NeaDaemon(f"d{i}", *args) for i in range(1, count + 1)]
    for daemon in daemons:
        testcase.addCleanup(daemon.stop)
        daemon.program.start()
    yield defer.gatherResults([d.listening() for d in daemons])
    return daemons


class HAProxy:
    """haproxy running deploy/haproxy.cfg, its addresses set through the environment."""

    def __init__(self, servers: list[int]) -> None:
        self.port = free_port()
        env = dict(os.environ, NEA_BIND=f"127.0.0.1:{self.port}", NEA_MAXCONN="9000")
        for i, port in enumerate(servers, 1):
            env[f"NEA_SERVER{i}"] = f"127.0.0.1:{port}"
        self.program = Program(["haproxy", "-db", "-f", str(HAPROXY_CFG)], env)

    def start(self):
        self.program.start()
        return wait_listening(self.program, self.port)


@defer.inlineCallbacks
def haproxy(testcase, servers: list[int]) -> HAProxy:
    proxy = HAProxy(servers)
    testcase.addCleanup(proxy.program.stop)
    yield proxy.start()
    return proxy


def status(testcase, port: int):
    """The status a client sees on ``port`` (TLS), as a dict, once the asking
    connection is closed.

    Asked mid-load, its handshake waits its turn behind the load's (nea completes
    handshakes in order): so it may take longer than other waits.
    """
    endpoint = wrapClientTLS(
        support.client_tls(),
        TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=3 * support.WAIT),
    )
    return fetch_status(endpoint, reactor, tls=True, timeout=3 * support.WAIT, until_closed=True)


@defer.inlineCallbacks
def until_status(testcase, port: int, condition, timeout: float = 3 * support.WAIT):
    """Poll the status of the instance on ``port`` until ``condition(status)`` holds."""
    deadline = reactor.seconds() + timeout
    while True:
        found = yield status(testcase, port)
        if condition(found):
            return found
        if reactor.seconds() > deadline:
            raise AssertionError(f"status never showed the expected state: {found}")
        yield support.next_tick(0.1)


@defer.inlineCallbacks
def until_clean(redis: RedisServer, prefix: str, within: float):
    """Poll until Redis holds no key and no channel under ``prefix``; fail after ``within`` s."""
    deadline = reactor.seconds() + within
    while True:
        leftovers = yield redis.leftovers(prefix)
        if leftovers == ([], [], []):
            return
        if reactor.seconds() > deadline:
            raise AssertionError(f"left in Redis under {prefix}: {leftovers}")
        yield support.next_tick(0.1)


#: Where Debian's postgresql package puts the server's programs, one folder per version.
POSTGRESQL_BINS = "/usr/lib/postgresql/*/bin"
#: PostgreSQL refuses to run as root: when the suite runs as root, it runs as this user.
POSTGRESQL_USER = "nobody"
_postgresql_template: Path | None = None


def postgresql_bin(program: str) -> str:
    """The newest installed PostgreSQL's ``program``; fails clearly when there is none."""
    found = sorted(
        glob.glob(f"{POSTGRESQL_BINS}/{program}"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if not found:
        raise AssertionError(
            f"PostgreSQL is not installed (no {POSTGRESQL_BINS}/{program}):"
            " `make test` installs it (Debian package postgresql)"
        )
    return found[-1]


def _postgresql_user() -> "pwd.struct_passwd | None":
    return pwd.getpwnam(POSTGRESQL_USER) if os.getuid() == 0 else None


def _chown_tree(root: Path, user: "pwd.struct_passwd | None") -> None:
    if user is None:
        return
    for path in [root, *root.rglob("*")]:
        os.lchown(path, user.pw_uid, user.pw_gid)


def postgresql_template() -> Path:
    """An initialised, never started data directory, made once per test process.

    initdb takes seconds; copying its result takes a fraction of that.
    """
    global _postgresql_template
    if _postgresql_template is None:
        user = _postgresql_user()
        parent = Path(tempfile.mkdtemp(prefix="nea-pg-template-"))
        atexit.register(shutil.rmtree, parent, ignore_errors=True)
        _chown_tree(parent, user)
        data = parent / "data"
        subprocess.run(
            [
                postgresql_bin("initdb"),
                "-D",
                str(data),
                "-U",
                "nea",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
        )
        _postgresql_template = data
    return _postgresql_template


class PostgreSQLServer:
    """A throw-away PostgreSQL on a free loopback port, in its own temporary data directory.

    No Unix socket, trust authentication for the superuser ``nea``. ``durable``
    keeps fsync on (for benchmarks); tests need no durability and go faster without.
    Can be stopped (``stop``, a fast shutdown that cuts its clients off) and started
    again on the same port with the same data.
    """

    def __init__(self, durable: bool = False) -> None:
        self.port = free_port()
        self.user = _postgresql_user()
        self.dir = Path(tempfile.mkdtemp(prefix="nea-pg-"))
        self.data = self.dir / "data"
        shutil.copytree(postgresql_template(), self.data, symlinks=True)
        _chown_tree(self.dir, self.user)
        self.settings = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            f"fsync={'on' if durable else 'off'}",
        ]
        self.program: Program | None = None

    @property
    def url(self) -> str:
        return f"postgresql://nea@127.0.0.1:{self.port}/postgres"

    @defer.inlineCallbacks
    def start(self, timeout: float = 3 * support.WAIT):
        """Start, and wait until it says it accepts connections."""
        self.program = Program(
            [
                postgresql_bin("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                *self.settings,
            ],
            user=self.user,
            cwd=str(self.dir),
        )
        self.program.start()
        deadline = reactor.seconds() + timeout
        while "ready to accept connections" not in self.program.output:
            if not self.program.running:
                raise AssertionError(f"postgres exited:\n{self.program.output}")
            if reactor.seconds() > deadline:
                raise AssertionError(
                    f"postgres not ready after {timeout} s:\n{self.program.output}"
                )
            yield support.next_tick(0.05)

    def stop(self, immediate: bool = False):
        """Fast shutdown (SIGINT): clients are disconnected, open transactions rolled back.

        In a fast shutdown a transaction that waited on a lock may still take it and commit
        when the holder's backend ends first; ``immediate`` (SIGQUIT) ends every backend
        with no cleanup, so nothing that waited commits.
        """
        if self.program is None:
            return defer.succeed(None)
        return self.program.stop("QUIT" if immediate else "INT")


@defer.inlineCallbacks
def postgresql_server(testcase, durable: bool = False, started: bool = True) -> PostgreSQLServer:
    """A `PostgreSQLServer` (started unless ``started`` is false), stopped and removed
    when the test ends."""
    server = PostgreSQLServer(durable)
    testcase.addCleanup(shutil.rmtree, server.dir, ignore_errors=True)
    testcase.addCleanup(server.stop)
    if started:
        yield server.start()
    return server


# ---- headless Chromium ----
#
# Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
# it reads commands on its fd 3 and answers on fd 4, NUL-separated JSON), which the
# reactor serves as two extra child file descriptors; no extra package is needed.

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_COMMANDS, _ANSWERS = 3, 4


class DevTools(protocol.ProcessProtocol):
    """A headless Chromium and the DevTools calls made to it, each bounded by ``WAIT``."""

    def __init__(self) -> None:
        self._buffer = b""
        self._ids = iter(range(1, 1_000_000))
        self._calls: dict[int, defer.Deferred] = {}
        self.stderr = b""
        self.ended = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.stderr = (self.stderr + data)[-4000:]
        if fd != _ANSWERS:
            return
        *messages, self._buffer = (self._buffer + data).split(b"\0")
        for message in messages:
            answer = json.loads(message)
            call = self._calls.pop(answer.get("id"), None)
            if call is None:
                continue  # an event; nothing here waits for those
            if "error" in answer:
                call.errback(RuntimeError(f"DevTools: {answer['error']}"))
            else:
                call.callback(answer["result"])

    def processEnded(self, reason) -> None:
        for call in self._calls.values():
            call.errback(RuntimeError(f"chromium ended: {self.stderr[-1000:]!r}"))
        self._calls.clear()
        self.ended.callback(None)

    def call(self, method: str, params: dict | None = None, session: str | None = None):
        number = next(self._ids)
        message = {"id": number, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._calls[number] = result = defer.Deferred()
        self.transport.writeToChild(_COMMANDS, json.dumps(message).encode() + b"\0")
        return result.addTimeout(support.WAIT, reactor)


def launch(testcase, url: str) -> DevTools:
    """A headless Chromium showing ``url``, closed when the test ends; skips without one."""
    if CHROMIUM is None:
        raise unittest.SkipTest("no chromium binary (make system-packages installs it)")
    devtools = DevTools()
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-first-run",
        "--remote-debugging-pipe",
        f"--user-data-dir={testcase.mktemp()}",
        url,
    ]
    reactor.spawnProcess(
        devtools,
        CHROMIUM,
        args,
        env=None,
        childFDs={0: "w", 1: "r", 2: "r", _COMMANDS: "w", _ANSWERS: "r"},
    )
    testcase.addCleanup(_close_chromium, devtools)
    return devtools


@defer.inlineCallbacks
def _close_chromium(devtools: DevTools):
    if devtools.ended.called:
        return
    try:
        yield devtools.call("Browser.close")
    except Exception:
        pass
    try:
        yield devtools.ended.addTimeout(support.WAIT, reactor)
    except defer.TimeoutError:
        try:
            devtools.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
        yield devtools.ended


@defer.inlineCallbacks
def poll(read, condition, what: str, tries: int = 600):
    """Read until ``condition(value)`` holds: at most ``tries`` reads, 0.05 s apart.

    Up to half a minute: Chromium starting on a loaded machine can take many seconds.
    """
    value = None
    for _ in range(tries):
        value = yield read()
        if condition(value):
            return value
        yield support.next_tick(0.05)
    raise AssertionError(f"{what}: not seen on the page; last read {value!r}")


@attrs.frozen
class Page:
    """One page of a headless Chromium: DevTools calls in its session."""

    devtools: DevTools
    session: str

    def call(self, method: str, params: dict | None = None):
        return self.devtools.call(method, params, self.session)

    @defer.inlineCallbacks
    def evaluate(self, expression: str):
        """The value of the JavaScript ``expression`` in the page (awaited if a promise)."""
        answer = yield self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in answer:
            raise AssertionError(f"JavaScript failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")


@defer.inlineCallbacks
def open_page(testcase, url: str) -> Page:
    """Chromium showing ``url``, attached to its page."""
    devtools = launch(testcase, url)
    targets = yield poll(
        lambda: devtools.call("Target.getTargets"),
        lambda result: any(t["type"] == "page" for t in result["targetInfos"]),
        "a page target",
    )
    page = next(t for t in targets["targetInfos"] if t["type"] == "page")
    attached = yield devtools.call(
        "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}
    )
    return Page(devtools, attached["sessionId"])
