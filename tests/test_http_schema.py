"""schemathesis against the live ``/openapi.json``: no server error, no response off the schema.

The server runs in this process; schemathesis runs as a subprocess (its CLI) while
the reactor serves it. A relay client that acks everything is connected, so
``POST /relay`` can succeed (with nobody to relay to it would rightly answer 503,
which schemathesis counts as a server error); for the same reason chat history is
on, in a SQLite file.
"""

import os
import sys

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from tests.support import connect, start_server, tcp_listen
from tests.test_http_api import TOKEN, auto_ack

#: Seconds the whole schemathesis run may take before the test fails.
RUN_LIMIT = 240


class Schemathesis(unittest.TestCase):
    timeout = RUN_LIMIT + 30

    @defer.inlineCallbacks
    def test_no_server_error_and_no_schema_violation(self):
        service = yield start_server(
            self, "--listen", tcp_listen("relay"), "--admin-token", TOKEN, "--relay-timeout", "5",
            "--store", f"sqlite:{self.mktemp()}.db",
        )
        client = yield connect(self, service.ports[0], tls=False)
        auto_ack(client)
        report = self.mktemp()
        argv = [
            "-c", "from schemathesis.cli import schemathesis; schemathesis()",
            "run", f"http://127.0.0.1:{service.http_port}/openapi.json",
            "--checks", "all",
            "--header", f"Authorization: Bearer {TOKEN}",
            "--max-examples", "15",
            "--seed", "20261121",
            "--workers", "1",
            "--request-timeout", "10",
            "--report", "junit", "--report-dir", report,
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
