"""nea-client's command line: parsing, exit codes, what relay mode prints (no sockets)."""

import io
import sys
from pathlib import Path
from types import SimpleNamespace

from twisted.trial import unittest

from nea.client import cli
from nea.client.delays import Constant, Uniform
from nea.client.relay import RelayClient
from nea.tls import devcerts
from nea.tls.client import TLSConfigError, client_tls_options
from tests.fakes import FakeNetwork
from tests.support import certs


class ParseTests(unittest.TestCase):
    def setUp(self):
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def parse_fails(self, *argv, saying: str):
        exit = self.assertRaises(SystemExit, cli.parse_args, list(argv))
        self.assertEqual(exit.code, cli.EXIT_USAGE)
        self.assertIn(saying, self.stderr.getvalue())

    def test_defaults_are_interactive_tls_on_localhost_3443(self):
        args = cli.parse_args([])
        self.assertEqual(
            (args.command, args.host, args.port, args.plain, args.ca),
            (None, "localhost", 3443, False, "certs/ca.pem"),
        )

    def test_relay_text_is_the_words_joined_and_options_go_anywhere(self):
        args = cli.parse_args(["relay", "hello", "--port", "8001", "big", "world"])
        self.assertEqual((args.command, args.text, args.port), ("relay", "hello big world", 8001))

    def test_ok_delay_is_a_fixed_value_or_a_range(self):
        self.assertEqual(cli.parse_args(["--ok-delay", "0.5"]).ok_delay, Constant(0.5))
        self.assertEqual(cli.parse_args(["--ok-delay", "0.1:2"]).ok_delay, Uniform(0.1, 2.0))
        self.parse_fails("--ok-delay", "2:1", saying="MIN must not exceed MAX")
        self.parse_fails("--ok-delay", "-1", saying="must not be negative")

    def test_nonsense_is_a_usage_error(self):
        self.parse_fails("relay", saying="relay needs a TEXT")
        self.parse_fails("relay", "two\nlines", saying="must be one line")
        self.parse_fails("status", "extra", saying="unexpected arguments: extra")
        self.parse_fails("frobnicate", saying="invalid choice: 'frobnicate'")
        self.parse_fails("--key", "k.pem", saying="--key needs --cert")
        self.parse_fails("--retry-initial", "5", "--retry-max", "1", saying="must not exceed")
        self.parse_fails("--retry-initial", "0", saying="must be positive")
        self.parse_fails("--retry-initial", "nan", saying="must not be negative")

    def test_a_file_that_is_no_certificate_is_a_usage_error(self):
        garbage = Path(self.mktemp())
        garbage.write_bytes(b"not a certificate\n")
        error = self.assertRaises(TLSConfigError, client_tls_options, "localhost", garbage)
        self.assertEqual(
            str(error),
            f"{garbage} is not a PEM certificate (--ca needs the CA's certificate in PEM)",
        )
        ca = certs() / devcerts.CA_CERT
        client = certs() / devcerts.CLIENT_CERT
        # A client certificate without its key, or with another one:
        error = self.assertRaises(TLSConfigError, client_tls_options, "localhost", ca, client)
        self.assertEqual(str(error), f"{client} is not a PEM certificate with its key")
        other_key = certs() / devcerts.SERVER_KEY
        error = self.assertRaises(
            TLSConfigError, client_tls_options, "localhost", ca, client, other_key
        )
        self.assertEqual(
            str(error), f"{client} and {other_key} are not a PEM certificate with its key"
        )

    def test_an_unreadable_client_key_says_which_option(self):
        missing = self.mktemp()
        error = self.assertRaises(
            TLSConfigError,
            client_tls_options,
            "localhost",
            certs() / devcerts.CA_CERT,
            certs() / devcerts.CLIENT_CERT,
            missing,
        )
        self.assertEqual(
            str(error),
            f"cannot read the client key {missing}: No such file or directory; check --key",
        )


class RelayReporterTests(unittest.TestCase):
    def setUp(self):
        self.said: list[str] = []
        self.shouted: list[str] = []
        self.reporter = cli.RelayReporter(self.said.append, self.shouted.append)
        self.net = FakeNetwork()
        self.client = RelayClient(
            "job-1", self.net.endpoint, self.net.reactor, observer=self.reporter
        )
        self.client.start()

    def test_ack_is_printed_and_exits_0(self):
        self.net.accept()
        self.client.link.handshakeCompleted()
        self.net.receive(b"message job-1\n")
        self.net.receive(b"ok job-1\n")
        self.net.drop()
        self.assertEqual(self.shouted, ["ok job-1"])
        self.assertEqual(
            self.said,
            [
                "sent message job-1 (attempt 1)",
                "forwarded to us: message job-1; answering ok",
                "acked after 0.000 s",
            ],
        )
        self.assertEqual(self.successResultOf(self.reporter.done), cli.EXIT_OK)

    def test_ending_without_an_ack_exits_1(self):
        self.net.refuse()
        self.client.stop()
        self.assertEqual(self.said[-1], "stopped")
        self.assertEqual(self.successResultOf(self.reporter.done), cli.EXIT_FAILED)
        self.assertEqual(self.shouted, [])

    def test_exit_codes(self):
        for outcome, code in [
            ("acked", cli.EXIT_OK),
            ("quit", cli.EXIT_OK),
            ("closed", cli.EXIT_OK),
            ("gave_up", cli.EXIT_FAILED),
            ("tls_failed", cli.EXIT_TLS),
        ]:
            reporter = cli.RelayReporter(self.said.append, self.shouted.append)
            reporter.on_finished(SimpleNamespace(outcome=outcome, detail=None))
            self.assertEqual(self.successResultOf(reporter.done), code, outcome)
