"""The deployed shape for real: nea-server daemons on one redis-server behind HAProxy.

Each test starts redis-server, two nea-server processes (TLS, one cluster) and
haproxy running deploy/haproxy.cfg in front of them, then runs nea-loadtest
(relay-mode clients over TLS through the load balancer) and checks that every
relay was acked, that each instance ends with no state, and that Redis keeps
nothing once the instances have stopped. Three tests inject a fault during the
load: kill -9 of an instance, a restart of redis-server, and SIGTERM of an
instance (its drain at once and paced, compared).
"""

import itertools
import json
import sys
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.python import log
from twisted.trial import unittest

from nea.tls import devcerts
from nea.wire import codec, frames
from tests import infra
from tests.support import WAIT, LineClient, certs, client_tls, daemon_env
from tests.test_drain import busiest

CLIENTS = 3000
WINDOW = 8.0
HEARTBEAT = 0.5
#: Clients hold a forwarded message a while before acking, so that at any moment
#: a few hundred relays are held by connections (a fault then hits many of them).
OK_DELAY = "uniform:0.1,0.8"
#: A client's wait for its ok before it gives the attempt up. Far above a normal
#: exchange, so that a timeout means a relay got stuck, not that a loaded machine
#: (3,000 TLS handshakes on two shared cores) was slow.
CLIENT_TIMEOUT = 60
#: Idle clients held through HAProxy while an instance stops (half of them on it).
FLEET = 400
#: The load during which it stops, twice per test: lighter than the others' (CPU is shared).
DRAIN_LOAD = 1000
_names = itertools.count(1)


def idle(status: dict) -> bool:
    """This instance holds nothing but the connection that asked for its status."""
    return status["zero_state"]


class IdleClient(LineClient):
    """A client that only stays connected: it acks every relay it is handed at once.

    ``welcome`` fires with the `frames.Welcome` that answers its hello, or with None
    if the connection ends first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.welcome = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        push = codec.decode_push(line)
        if isinstance(push, frames.RelayPush):
            self.send(json.dumps({"type": "ok", "payload": push.text}))
        elif isinstance(push, frames.Welcome) and not self.welcome.called:
            self.welcome.callback(push)
        else:
            super().lineReceived(line)

    def connectionLost(self, reason) -> None:
        if not self.welcome.called:
            self.welcome.callback(None)
        super().connectionLost(reason)


class BehindHAProxy(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield infra.redis_server(self)
        self.name = f"h{next(_names)}"
        self.daemon_args = (
            "--redis",
            self.redis.url,
            "--cluster-name",
            self.name,
            "--heartbeat",
            str(HEARTBEAT),
            "--max-clients",
            str(CLIENTS * 2),
            "--http",
            "none",
        )
        self.daemons = yield infra.nea_daemons(self, 2, *self.daemon_args)
        yield self.until_members([d.port for d in self.daemons], 2)
        self.proxy = yield infra.haproxy(self, [d.proxied_port for d in self.daemons])

    def until_members(self, ports: list[int], count: int):
        """Until each instance is connected to Redis and sees ``count`` members."""

        def joined(status):
            cluster = status["cluster"]
            return cluster["state"] == "connected" and len(cluster["members"]) == count

        waits = defer.gatherResults([infra.until_status(self, port, joined) for port in ports])
        return waits.addErrback(self.with_daemon_output)

    def with_daemon_output(self, failure):
        """A failed wait says what the daemons logged (they run as separate processes)."""
        logs = "\n".join(f"--- {d.program.output()}" for d in self.daemons)
        raise AssertionError(f"{failure.getErrorMessage()}\ndaemon output:\n{logs}")

    def until_forwarded(self, daemon, count: int):
        """Until ``daemon`` has forwarded ``count`` relays: the load is under way."""
        return infra.until_status(self, daemon.port, lambda s: s["relays"]["forwarded"] >= count)

    def load(self, clients: int = CLIENTS) -> defer.Deferred:
        """Run nea-loadtest through HAProxy; fires with its JSON report."""
        report = Path(tempfile.mkdtemp(prefix="nea-load-")) / "report.json"
        program = infra.Program(
            [
                sys.executable,
                "-m",
                "nea.loadtest",
                "--port",
                str(self.proxy.port),
                "--ca",
                str(certs() / devcerts.CA_CERT),
                "--server-name",
                "localhost",
                "--clients",
                str(clients),
                "--window",
                str(WINDOW),
                "--ok-delay",
                OK_DELAY,
                "--timeout",
                str(CLIENT_TIMEOUT),
                "--retries",
                "20",
                "--seed",
                "4",
                "--settle",
                "10",
                "--progress",
                "60",
                "--json",
                str(report),
            ],
            daemon_env(),
        )
        program.start()
        self.addCleanup(program.kill)

        def read(_):
            if not report.exists():
                raise AssertionError(f"nea-loadtest wrote no report:\n{program.output}")
            figures = json.loads(report.read_text())
            # Kept in the test log for whoever wants the figures of a run.
            log.msg(f"nea-loadtest report: {json.dumps(figures)}")
            return figures

        return infra.watch(program.watcher.ended, 120).addCallback(read)

    def assert_all_acked(self, report: dict) -> None:
        figures = (report["clients"], report["acked"], report["lost"])
        self.assertEqual(figures, (CLIENTS, CLIENTS, 0), json.dumps(report, indent=1))
        self.assertTrue(report["ok"], json.dumps(report, indent=1))

    @defer.inlineCallbacks
    def assert_idle_and_clean(self, daemons):
        """Every running instance idle; after they stop, Redis holds nothing of the cluster."""
        for daemon in daemons:
            yield infra.until_status(self, daemon.port, idle)
        yield defer.gatherResults([d.stop() for d in daemons])
        # A killed instance's key outlives it by up to 3 heartbeats; nothing else may stay.
        yield infra.until_clean(self.redis, self.name, within=3 * HEARTBEAT + WAIT)

    @defer.inlineCallbacks
    def test_load_through_haproxy_is_all_acked(self):
        report = yield self.load()
        self.assert_all_acked(report)
        # Round robin: both instances relayed.
        for daemon in self.daemons:
            status = yield infra.status(self, daemon.port)
            self.assertGreater(status["relays"]["forwarded"], CLIENTS / 4, status["relays"])
        yield self.assert_idle_and_clean(self.daemons)

    @defer.inlineCallbacks
    def test_kill_9_of_an_instance_during_load(self):
        survivor, victim = self.daemons
        running = self.load()
        yield self.until_forwarded(victim, CLIENTS // 8)
        yield victim.kill()
        report = yield running
        self.assert_all_acked(report)
        self.assertGreater(report["retried_clients"], 0, "the kill hit nobody: a useless test")
        # Clients of the victim reconnected ("lost"); but no client had to time out:
        # relays held by the victim's connections were recovered by their origins.
        self.assertEqual(report["closes"]["timeout"], 0, report["closes"])
        status = yield infra.status(self, survivor.port)
        self.assertEqual([m["instance"] for m in status["cluster"]["members"]], ["d1"])
        yield self.assert_idle_and_clean([survivor])

    @defer.inlineCallbacks
    def test_redis_restart_during_load(self):
        first = self.daemons[0]
        running = self.load()
        yield self.until_forwarded(first, CLIENTS // 8)
        yield self.redis.stop()
        ports = [d.port for d in self.daemons]
        for port in ports:
            yield infra.until_status(self, port, lambda s: s["cluster"]["state"] == "degraded")
        # Serving locally meanwhile: relays keep flowing while Redis is down.
        degraded_at = (yield infra.status(self, first.port))["relays"]["forwarded"]
        yield self.until_forwarded(first, degraded_at + CLIENTS // 8)
        yield self.redis.start()
        report = yield running
        self.assert_all_acked(report)
        # Nothing stuck on the way: deliveries out at the other instance when Redis
        # went were served locally, so no client had to time out and retry.
        self.assertEqual(report["closes"]["timeout"], 0, report["closes"])
        yield self.until_members(ports, 2)
        for daemon in self.daemons:  # each transition logged once: no log spam
            log_lines = daemon.program.output.splitlines()
            for phrase in ("unreachable", "is back: rejoined"):
                self.assertEqual(len([line for line in log_lines if phrase in line]), 1, phrase)
        yield self.assert_idle_and_clean(self.daemons)

    @defer.inlineCallbacks
    def welcomed(self, connected: list[float] | None = None):
        """An `IdleClient` connected through HAProxy, and the instance that welcomed it.

        ``connected`` gets the time its TCP connection was made (HAProxy passes it on
        to an instance at once): when it reached the instance, however long that
        instance then takes to do its TLS handshake.
        """
        endpoint = wrapClientTLS(
            client_tls(), TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.port, timeout=WAIT)
        )
        # A loaded instance closes a handshake that waited past --handshake-timeout
        # for its turn: then the client dials again, as any client would.
        for attempt in range(5):
            client = yield endpoint.connect(Factory.forProtocol(IdleClient)).addTimeout(
                3 * WAIT, reactor
            )
            if connected is not None and attempt == 0:
                connected.append(reactor.seconds())
            self.addCleanup(lambda c=client: c.closed.called or c.transport.abortConnection())
            client.send('{"type":"hello"}')
            welcome = yield client.welcome.addTimeout(6 * WAIT, reactor)
            if welcome is not None:
                return client, welcome.instance
            log.msg("an idle client was closed before its welcome: dialling again")
        raise AssertionError("an idle client was closed before its welcome 5 times")

    @defer.inlineCallbacks
    def come_back(self, client, survivor: str, goodbyes: list[float], arrivals: list[float]):
        """Told ``shutting_down``, ``client`` reconnects at once (the worst case)."""
        goodbye = yield client.next_push(timeout=3 * WAIT)
        goodbyes.append(reactor.seconds())
        self.assertEqual(goodbye, frames.ErrorReply("shutting_down", "the server is shutting down"))
        yield client.closed
        again, instance = yield self.welcomed(arrivals)
        self.assertEqual(instance, survivor)
        return again

    @defer.inlineCallbacks
    def sigterm_during_load(self, survivor, victim):
        """SIGTERM ``victim`` during a load: when its idle clients were told to go, and when
        they reached ``survivor`` again."""
        fleet = yield defer.gatherResults([self.welcomed() for _ in range(FLEET)])
        leaving = [client for client, instance in fleet if instance == victim.instance_id]
        self.assertGreater(len(leaving), FLEET // 4, "HAProxy put few clients on the victim")
        running = self.load(DRAIN_LOAD)
        yield self.until_forwarded(victim, DRAIN_LOAD // 8)
        ended = []
        victim.program.watcher.ended.addCallback(ended.append)
        goodbyes: list[float] = []
        arrivals: list[float] = []
        back = defer.gatherResults(
            [self.come_back(client, survivor.instance_id, goodbyes, arrivals) for client in leaving]
        )
        victim.program.signal("TERM")
        returned = yield back
        # It is ending by itself: wait, and send no second SIGTERM (one that lands after
        # the drain, as the process exits, would kill it with the signal's default).
        yield infra.watch(victim.program.watcher.ended, 3 * WAIT)
        report = yield running
        # All acked, nothing lost; the instances' zero state is not reached while the
        # fleet is connected, so it is checked at the end, as the fleet's own leaving.
        figures = (report["clients"], report["acked"], report["lost"])
        self.assertEqual(figures, (DRAIN_LOAD, DRAIN_LOAD, 0), json.dumps(report, indent=1))
        self.assertEqual(report["zero_state"]["connections_besides_ours"], FLEET)
        self.assertEqual(len(arrivals), len(leaving))
        [reason] = ended
        self.assertEqual(reason.exitCode, 0, victim.program.output)
        for client in returned + [client for client, _ in fleet if client not in leaving]:
            client.transport.loseConnection()
            yield client.closed
        return goodbyes, arrivals

    @defer.inlineCallbacks
    def test_sigterm_paced_drain_spreads_the_reconnects(self):
        """The victim's clients are told to go spread over the drain, not at once, and so
        come back to the survivor spread out.

        What pacing decides is when the victim closes its clients, so that is what is
        asserted (the goodbyes' arrival, most in one second). When they reach the
        survivor again also depends on how fast the survivor completes handshakes on
        two shared cores, so that rate is measured and logged.
        """
        survivor, paced = self.daemons
        paced_goodbyes, paced_arrivals = yield self.sigterm_during_load(survivor, paced)
        at_once = infra.NeaDaemon("d3", *self.daemon_args, "--drain-timeout", "0")
        self.addCleanup(at_once.stop)
        yield at_once.start()
        yield self.until_members([survivor.port, at_once.port], 2)
        self.proxy = yield infra.haproxy(self, [survivor.proxied_port, at_once.proxied_port])
        at_once_goodbyes, at_once_arrivals = yield self.sigterm_during_load(survivor, at_once)
        log.msg(
            "most in one second, --drain-timeout 0 vs default (5 s): goodbyes "
            f"{busiest(at_once_goodbyes, 1.0)} vs {busiest(paced_goodbyes, 1.0)} of "
            f"{len(at_once_goodbyes)}/{len(paced_goodbyes)}; reconnects reaching the survivor "
            f"{busiest(at_once_arrivals, 1.0)} vs {busiest(paced_arrivals, 1.0)}"
        )
        self.assertLess(busiest(paced_goodbyes, 1.0), busiest(at_once_goodbyes, 1.0) / 2)
        yield infra.until_status(self, survivor.port, idle)
        yield self.assert_idle_and_clean([survivor])

    test_sigterm_paced_drain_spreads_the_reconnects.timeout = 360


class ClientAddressesBehindHAProxy(unittest.TestCase):
    """deploy/haproxy.cfg sends a PROXY header: nea sees each client's own address.

    Shown with a per-address limit of one: clients from two source addresses are
    both served through HAProxy, a second one from the same address is refused.
    Without the header every client would be HAProxy (127.0.0.1), and the second
    client would be refused whatever its address.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_each_client_is_seen_with_its_own_address(self):
        [daemon] = yield infra.nea_daemons(self, 1, "--max-clients-per-ip", "1", "--http", "none")
        proxy = yield infra.haproxy(self, [daemon.proxied_port] * 2)
        first = yield connect_from(self, proxy.port, "127.0.0.3")
        second = yield connect_from(self, proxy.port, "127.0.0.4")
        for client in (first, second):
            client.send("hello")
            self.assertEqual((yield client.next_push()), frames.ReverseReply("olleh"))
        refused = yield connect_from(self, proxy.port, "127.0.0.3", handshake=False)
        yield refused.closed.addTimeout(WAIT, reactor)
        first.send("still")
        self.assertEqual((yield first.next_push()), frames.ReverseReply("llits"))


@defer.inlineCallbacks
def connect_from(testcase, port: int, source: str, handshake: bool = True):
    """A TLS line client bound to ``source`` (a loopback address); closed at test end."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=WAIT, bindAddress=(source, 0))
    if handshake:
        endpoint = wrapClientTLS(client_tls(), endpoint)
    client = yield endpoint.connect(Factory.forProtocol(LineClient)).addTimeout(WAIT, reactor)
    testcase.addCleanup(
        lambda: (
            client.closed
            if client.closed.called
            else client.transport.abortConnection() or client.closed
        )
    )
    return client
