"""schemathesis against the live ``/openapi.json``: no server error, no response off the schema.

The server runs in this process; schemathesis runs as a subprocess (its CLI) while
the reactor serves it. A relay client that acks everything is connected, so
``POST /relay`` can succeed (with nobody to relay to it would rightly answer 503,
which schemathesis counts as a server error); for the same reason chat history is
on, in a SQLite file. Likewise a client registered as ``dev`` and serving
``people`` answers every request, and schemathesis is told to use those names,
so the addressed requests reach it; a timeout schemathesis draws may be too
short for any reply, so for those two operations a 504 (``request_timeout``) is
an expected answer.
"""

import os
import sys

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from nea.wire import frames
from tests.support import connect, start_server, tcp_listen
from tests.test_cluster_requests import answering, command
from tests.test_http_api import TOKEN, auto_ack

#: Seconds the whole schemathesis run may take before the test fails.
RUN_LIMIT = 240

CONFIG = """
[[operations]]
include-path-regex = "^/clients/"
parameters = { name = "dev" }

[[operations]]
include-path-regex = "^/services/"
parameters = { service = "people" }

[[operations]]
include-path-regex = "/requests$"

[operations.checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "504"]
"""


class Schemathesis(unittest.TestCase):
    timeout = RUN_LIMIT + 30

    @defer.inlineCallbacks
    def test_no_server_error_and_no_schema_violation(self):
        service = yield start_server(
            self,
            "--listen",
            tcp_listen("relay"),
            "--listen",
            tcp_listen(),
            "--admin-token",
            TOKEN,
            "--relay-timeout",
            "5",
            "--store",
            f"sqlite:{self.mktemp()}.db",
        )
        client = yield connect(self, service.ports[0], tls=False)
        auto_ack(client)
        device = yield connect(self, service.ports[1], tls=False)
        for line, answer in (
            ("register dev", frames.Registered("dev")),
            ("serve people", frames.Serving("people")),
        ):
            yield command(device, line, answer)
        auto_ack(device)  # it is relay-capable too
        answering(device, lambda body: "fine")
        report = self.mktemp()
        config = self.mktemp()
        with open(config, "w") as f:
            f.write(CONFIG)
        argv = [
            "-c",
            "from schemathesis.cli import schemathesis; schemathesis()",
            "--config-file",
            config,
            "run",
            f"http://127.0.0.1:{service.http_port}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--max-examples",
            "15",
            "--seed",
            "20261121",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--report",
            "junit",
            "--report-dir",
            report,
        ]
        env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false"}
        out, err, code = yield getProcessOutputAndValue(sys.executable, argv, env=env).addTimeout(
            RUN_LIMIT, reactor
        )
        output = out.decode("utf-8", "replace") + err.decode("utf-8", "replace")
        self.assertEqual(code, 0, output[-6000:])
        self.assertIn("No issues found", output)
        # The run really drove the server: relays went out and came back acked.
        self.assertGreater(service.hub.snapshot().relays.acked, 0)
        self.assertGreater(service.hub.snapshot().chat.broadcasts, 0)
        self.assertGreater(service.hub.snapshot().addressed.answered, 0)
