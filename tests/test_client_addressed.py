"""nea-client register and serve: unit tests on a fake network, then against a real server."""

import json
import random

from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from nea.client.addressed import ERROR_PREFIX, RegisterClient, ServeClient, ServeConfig
from nea.client.redial import DialConfig
from nea.client.shell import Outcome, ShellCommand
from nea.tls import devcerts
from nea.wire import frames
from nea.wire.backoff import Backoff
from tests.fakes import FakeNetwork
from tests.support import (
    WAIT,
    certs,
    connect,
    daemon_env,
    next_tick,
    settle,
    start_server,
    tls_listen,
)
from tests.test_client_e2e import PYTHON_M, QUICK, tls_endpoint, tls_listen_on
from tests.test_cluster_requests import command, post
from tests.test_http_api import TOKEN

PLAIN = DialConfig(tls=False, backoff=Backoff(initial=1.0, maximum=8.0, jitter=0.0))


def request_line(id: str, body, service=None) -> bytes:
    payload = {"id": id, "body": body, "service": service}
    return json.dumps({"type": "request", "payload": payload}).encode() + b"\n"


def sent(transport) -> list:
    """The JSON frames written so far, decoded; the transport is cleared."""
    frames_ = [json.loads(line) for line in transport.value().splitlines()]
    transport.clear()
    return frames_


def reply(id: str, body) -> dict:
    return {"type": "reply", "payload": {"id": id, "body": body}}


class RegisterUnits(unittest.TestCase):
    def setUp(self):
        self.net = FakeNetwork()
        self.shown: list[str] = []
        self.done: list = []
        self.client = RegisterClient(
            "lock1",
            self.net.endpoint,
            self.net.reactor,
            PLAIN,
            self.shown.append,
            self.done.append,
            rng=random.Random(1),
        )
        self.client.start()

    def accept(self):
        transport = self.net.accept()
        self.assertEqual(sent(transport), [{"type": "register", "payload": "lock1"}])
        return transport

    def test_the_next_line_answers_the_oldest_request(self):
        transport = self.accept()
        self.net.receive(request_line("r1", "status") + request_line("r2", {"cmd": "open"}))
        self.assertIn("[request r1] status", self.shown)
        self.assertIn('[request r2] {"cmd":"open"}', self.shown)
        self.assertEqual(
            self.shown[-1], "[answer] type the answer to r1; 1 more wait ('ID TEXT' answers one)"
        )
        self.client.user_line(b"locked, battery 97")
        self.assertEqual(sent(transport), [reply("r1", "locked, battery 97")])
        self.assertEqual(self.shown[-1], "[answer] type the answer to r2")

    def test_id_then_text_answers_that_request(self):
        transport = self.accept()
        self.net.receive(request_line("r1", "a") + request_line("r2", "b"))
        self.client.user_line(b"r2 second first")
        self.assertEqual(sent(transport), [reply("r2", "second first")])
        self.client.user_line(b"r9 not an id")  # r9 waits nowhere: the whole line answers r1
        self.assertEqual(sent(transport), [reply("r1", "r9 not an id")])

    def test_a_line_with_nothing_to_answer_is_not_sent(self):
        transport = self.accept()
        self.client.user_line(b"hello")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.shown[-1], "[info] no request waits for an answer; line not sent")

    def test_registers_again_after_a_reconnect_and_drops_the_old_requests(self):
        self.accept()
        self.net.receive(request_line("r1", "a"))
        self.net.drop()
        self.assertIn("[info] connection lost; 1 unanswered request(s) dropped", self.shown)
        self.net.reactor.advance(1.0)
        transport = self.accept()  # announced again
        self.client.user_line(b"late")
        self.assertEqual(transport.value(), b"")

    def test_name_taken_over_ends_without_redialling(self):
        self.accept()
        self.net.receive(
            b'{"type":"error","payload":{"code":"name_taken_over",'
            b'"message":"lock1 registered elsewhere"}}\n'
        )
        self.net.drop()
        self.assertEqual((self.client.outcome, self.done), ("taken_over", [self.client]))
        self.net.reactor.advance(60)
        self.assertEqual(self.net.dials, 1)
        self.assertIn("another client registered the name", self.shown[-1])

    def test_end_of_input_closes(self):
        transport = self.accept()
        self.client.user_done()
        self.assertTrue(transport.disconnecting)
        self.net.drop()
        self.assertEqual(self.client.outcome, "closed")


class HeldCommand:
    """A `ShellCommand` stand-in whose runs finish when the test says so."""

    def __init__(self):
        self.runs: list[tuple[bytes, defer.Deferred]] = []

    def run(self, reactor, stdin):
        d = defer.Deferred()
        self.runs.append((stdin, d))
        return d


class ServeUnits(unittest.TestCase):
    def setUp(self):
        self.net = FakeNetwork()
        self.shown: list[str] = []
        self.command = HeldCommand()
        config = ServeConfig(self.command, max_running=2, max_queued=1)
        self.client = ServeClient(
            "people",
            config,
            self.net.endpoint,
            self.net.reactor,
            PLAIN,
            self.shown.append,
            lambda client: None,
            rng=random.Random(1),
        )
        self.client.start()
        self.transport = self.net.accept()
        self.assertEqual(sent(self.transport), [{"type": "serve", "payload": "people"}])

    def test_bounded_running_then_queued_then_refused(self):
        self.net.receive(b"".join(request_line(f"r{i}", f"b{i}", "people") for i in range(4)))
        self.assertEqual([stdin for stdin, _ in self.command.runs], [b"b0\n", b"b1\n"])
        self.assertEqual(
            sent(self.transport), [reply("r3", ERROR_PREFIX + "busy: too many requests queued")]
        )
        self.command.runs[1][1].callback(Outcome("B1"))
        self.assertEqual(sent(self.transport), [reply("r1", "B1")])
        self.assertEqual(self.command.runs[2][0], b"b2\n")  # the queued one started
        self.command.runs[0][1].callback(Outcome("", "exit status 1: boom"))
        self.assertEqual(sent(self.transport), [reply("r0", "error: exit status 1: boom")])
        self.assertIn("[error command] r0: exit status 1: boom", self.shown)
        self.assertEqual(self.client.running, 1)

    def test_a_lost_link_drops_its_queue_and_late_replies(self):
        self.net.receive(b"".join(request_line(f"r{i}", "x", "people") for i in range(3)))
        self.net.drop()
        self.command.runs[0][1].callback(Outcome("late"))
        self.assertEqual(len(self.command.runs), 2)  # r2 was queued: never run
        self.net.reactor.advance(1.0)
        transport = self.net.accept()
        self.assertEqual(sent(transport), [{"type": "serve", "payload": "people"}])
        self.command.runs[1][1].callback(Outcome("late too"))
        self.assertEqual(transport.value(), b"")
        self.assertIn("[info] r1 was lost with its connection; reply dropped", self.shown)


class ShellCommandTests(unittest.TestCase):
    """The real /bin/sh: exit codes, output bounds, timeouts that kill the group."""

    def run_command(self, command, stdin=b"", **options):
        return ShellCommand(command, **options).run(reactor, stdin).addTimeout(WAIT, reactor)

    @defer.inlineCallbacks
    def test_stdin_in_stdout_out_without_its_last_newline(self):
        outcome = yield self.run_command("tr a-z A-Z", b"hello\n")
        self.assertEqual(outcome, Outcome("HELLO"))

    @defer.inlineCallbacks
    def test_a_failure_says_its_status_and_stderr(self):
        outcome = yield self.run_command("echo half; echo broken >&2; exit 3")
        self.assertEqual(outcome, Outcome("half", "exit status 3: broken"))

    @defer.inlineCallbacks
    def test_a_timeout_kills_the_whole_group(self):
        # The shell's child (sleep) would keep stdout open for a minute if it survived.
        outcome = yield self.run_command("sleep 60 | cat", timeout=0.2)
        self.assertEqual(outcome.error, "killed: no answer within 0.2 s")

    @defer.inlineCallbacks
    def test_too_much_output_is_killed(self):
        outcome = yield self.run_command("yes", max_output=1000)
        self.assertEqual(outcome.error, "killed: more than 1000 bytes of output")


class ServeAgainstTheServer(unittest.TestCase):
    def serve(self, port, command, service="up"):
        finished = defer.Deferred()
        client = ServeClient(
            service,
            ServeConfig(ShellCommand(command, timeout=WAIT)),
            tls_endpoint(port),
            reactor,
            QUICK,
            lambda line: None,
            finished.callback,
        )
        client.start()

        def stop():
            client.finish("closed")
            return finished

        self.addCleanup(stop)
        return client

    def server(self, listen=None):
        return start_server(
            self, "--listen", listen or tls_listen(), "--admin-token", TOKEN, "--drain-timeout", "1"
        )

    @defer.inlineCallbacks
    def test_answers_an_http_request_uppercased(self):
        service = yield self.server()
        self.serve(service.ports[0], "tr a-z A-Z")
        code, answer = yield self.post_when_served(service, "hello people")
        self.assertEqual((code, answer["reply"]), (200, "HELLO PEOPLE"))

    @defer.inlineCallbacks
    def test_serves_again_after_the_server_restarts(self):
        first = yield self.server()
        port = first.ports[0]
        self.serve(port, "tr a-z A-Z")
        code, answer = yield self.post_when_served(first, "one")
        self.assertEqual(answer["reply"], "ONE")
        yield first.stopService()
        second = yield self.server(tls_listen_on(port))
        code, answer = yield self.post_when_served(second, "two")
        self.assertEqual((code, answer["reply"]), (200, "TWO"))

    @defer.inlineCallbacks
    def test_a_failing_command_gives_an_error_reply(self):
        service = yield self.server()
        client = self.serve(service.ports[0], "echo no >&2; exit 7")
        code, answer = yield self.post_when_served(service, "x")
        self.assertEqual((code, answer["reply"]), (200, "error: exit status 7: no"))
        code, answer = yield self.post_when_served(service, "again")  # still serving
        self.assertEqual(code, 200)
        self.assertIsNone(client.outcome)

    @defer.inlineCallbacks
    def post_when_served(self, service, body):
        """POST to the service ``up`` once it has a member (the client may be reconnecting)."""
        for _ in range(200):
            code, answer = yield post(service.http_port, "/services/up/requests", body)
            if answer.get("error") != "no_member":
                return code, answer
            yield next_tick(0.05)
        raise AssertionError("the service never had a member")


class Typist(ProcessProtocol):
    """A ``nea-client register`` child whose stdin the test writes line by line."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def shown(self) -> list[str]:
        return self.out.decode().splitlines()

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)

    def kill(self):
        if not self.ended.called:
            self.transport.signalProcess("KILL")
            return self.ended


class RegisterAgainstTheServer(unittest.TestCase):
    def typist(self, port, name):
        argv = [
            *PYTHON_M,
            "--port",
            str(port),
            "--ca",
            str(certs() / devcerts.CA_CERT),
            "--retry-initial",
            "0.05",
            "--retry-max",
            "0.3",
            "register",
            name,
        ]
        typist = Typist()
        reactor.spawnProcess(typist, argv[0], argv, env=daemon_env())
        self.addCleanup(typist.kill)
        typist.ended.addTimeout(3 * WAIT, reactor)
        return typist

    @defer.inlineCallbacks
    def test_the_typed_line_is_the_reply(self):
        service = yield start_server(self, "--listen", tls_listen(), "--admin-token", TOKEN)
        typist = self.typist(service.ports[0], "lock1")
        # A fresh Python importing Twisted: slow on a loaded machine, hence the wide bound.
        yield settle(
            lambda: "[registered] you are addressable as lock1" in typist.shown(), 3 * WAIT
        )
        asked = post(service.http_port, "/clients/lock1/requests", {"cmd": "status"})
        yield settle(lambda: any(line.startswith("[answer] ") for line in typist.shown()))
        self.assertTrue(
            any(
                line.startswith("[request ") and line.endswith(' {"cmd":"status"}')
                for line in typist.shown()
            ),
            typist.shown(),
        )
        typist.transport.write(b"locked\n")
        code, answer = yield asked
        self.assertEqual((code, answer["reply"]), (200, "locked"))
        typist.transport.closeStdin()
        self.assertEqual((yield typist.ended), 0)

    @defer.inlineCallbacks
    def test_taken_over_ends_with_exit_4(self):
        service = yield start_server(self, "--listen", tls_listen())
        typist = self.typist(service.ports[0], "lock2")
        yield settle(
            lambda: "[registered] you are addressable as lock2" in typist.shown(), 3 * WAIT
        )
        other = yield connect(self, service.ports[0])
        yield command(other, "register lock2", frames.Registered("lock2"))
        self.assertEqual((yield typist.ended), 4)
        self.assertIn("[error taken_over]", typist.out.decode())
