"""Command-line options and listener strings."""

import os
from pathlib import Path

import attrs
from twisted.python import usage
from twisted.trial import unittest

from nea.cluster.batch import DEFAULT_BATCH_INTERVAL, MAX_BATCH_INTERVAL
from nea.server.listeners import Listen, TlsPolicy, default_listen
from nea.server.options import Options
from nea.server.settings import Settings
from nea.server.tap import ensure_dev_certs
from nea.wire import profiles
from tests.support import parse_options


class ListenTests(unittest.TestCase):
    def test_profile_prefix(self):
        self.assertEqual(Listen.parse("tcp:8000"), Listen(profiles.NEA, "tcp:8000"))
        self.assertEqual(
            Listen.parse("relay=tcp:8001:interface=127.0.0.1"),
            Listen(profiles.RELAY, "tcp:8001:interface=127.0.0.1"),
        )
        # '=' later in the string belongs to the endpoint, not to a profile
        self.assertEqual(Listen.parse("ssl:1:privateKey=k").profile, profiles.NEA)
        with self.assertRaises(ValueError):
            Listen.parse("gossip=tcp:1")

    def test_backlog_is_added_unless_given(self):
        self.assertEqual(Listen.parse("tcp:1").with_backlog(1024), "tcp:1:backlog=1024")
        self.assertEqual(Listen.parse("ssl:1:backlog=5").with_backlog(1024), "ssl:1:backlog=5")
        self.assertEqual(
            Listen.parse("systemd:domain=INET:index=0").with_backlog(1024),
            "systemd:domain=INET:index=0",
        )

    def test_certificate_files(self):
        self.assertEqual(
            Listen.parse("ssl:1:privateKey=a/k.pem:certKey=a/c.pem").certificate_files(),
            [Path("a/k.pem"), Path("a/c.pem")],
        )
        self.assertEqual(Listen.parse("tcp:1").certificate_files(), [])


class OptionsTests(unittest.TestCase):
    def test_defaults_match_the_spec(self):
        options = parse_options()
        self.assertEqual(options["dev-certs"], Path("certs").resolve())
        self.assertEqual(options["listen"], [Listen.parse(default_listen(options["dev-certs"]))])
        self.assertEqual(
            options["listen"][0].certificate_files(),
            [
                Path("certs").resolve() / "server-key.pem",
                Path("certs").resolve() / "server.pem",
            ],
        )
        self.assertEqual(options["max-clients"], 100)
        self.assertEqual(options["date-interval"], 10.0)
        self.assertEqual(options["max-line"], 64 * 1024)
        self.assertGreaterEqual(options["backlog"], 1024)
        self.assertTrue(options["instance-id"])
        self.assertEqual((options["chat-rate"], options["chat-bytes-rate"]), (10.0, 16384.0))
        self.assertEqual(options["history-max-bytes"], 256 * 1024 * 1024)

    def test_fairness_defaults(self):
        from nea.http.hosts import AllowedHosts

        options = parse_options()
        self.assertEqual(
            (options["ping-interval"], options["first-ack-timeout"], options["http-idle-timeout"]),
            (30.0, 0.5, 5.0),
        )
        self.assertEqual(
            options["http-allowed-hosts"],
            AllowedHosts(frozenset({"localhost", "127.0.0.1", "::1"})),
        )
        wide = parse_options("--http", "tcp:3000")["http-allowed-hosts"]
        self.assertTrue(wide.allows("192.0.2.7:3000") and not wide.allows("rebound.example"))
        named = parse_options("--http-allowed-hosts", "Chat.Example.com:443")
        self.assertTrue(named["http-allowed-hosts"].allows("chat.example.com"))
        self.assertFalse(named["http-allowed-hosts"].allows("localhost"))
        for args in (["--ping-interval", "-1"], ["--http-allowed-hosts", " , "]):
            with self.assertRaises(usage.UsageError, msg=args):
                parse_options(*args)

    def test_several_listeners(self):
        options = parse_options("--listen", "tcp:1", "--listen", "chat=tcp:2")
        self.assertEqual([listen.profile.name for listen in options["listen"]], ["nea", "chat"])

    def test_bad_values_are_usage_errors(self):
        for args in (
            ["--max-clients", "0"],
            ["--date-interval", "-1"],
            ["--listen", "x=tcp:1"],
            ["--heartbeat", "nan"],  # compares as neither positive nor not
            ["--ack-timeout", "nan"],
        ):
            with self.assertRaises(usage.UsageError, msg=args):
                parse_options(*args)

    def test_cluster_batch_interval_is_bounded_seconds(self):
        option = "cluster-batch-interval"
        self.assertEqual(parse_options()[option], DEFAULT_BATCH_INTERVAL)
        self.assertEqual(parse_options(f"--{option}", "0")[option], 0.0)
        self.assertEqual(parse_options(f"--{option}", "0.005")[option], 0.005)
        # Longer, it would near the timeouts that give up a silent Redis.
        for value in ("-0.001", str(MAX_BATCH_INTERVAL * 2), "nan", "inf", "2ms"):
            with self.assertRaises(usage.UsageError, msg=value):
                parse_options(f"--{option}", value)
        # What a heartbeat's round trip marks as arrived must have been sent by then.
        with self.assertRaises(usage.UsageError):
            parse_options(f"--{option}", "0.05", "--heartbeat", "0.05")
        self.assertEqual(parse_options(f"--{option}", "0.05", "--heartbeat", "0.06")[option], 0.05)

    def test_help_documents_every_option(self):
        text = str(Options())
        for name in (
            "listen",
            "max-clients",
            "date-interval",
            "max-line",
            "max-outbound",
            "backlog",
            "drain-timeout",
            "console",
            "instance-id",
            "dev-certs",
            "cluster-batch-interval",
        ):
            self.assertIn(f"--{name}", text)


class DevCertsOnFirstRunTests(unittest.TestCase):
    def test_generated_when_the_default_files_are_missing(self):
        home = Path(self.mktemp()).resolve()
        home.mkdir()
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(home)
        options = parse_options()
        ensure_dev_certs(Settings.from_options(options).listeners)
        for name in ("ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem"):
            self.assertTrue((home / "certs" / name).exists(), name)

    def test_the_directory_is_the_one_of_the_start_even_after_a_change_of_directory(self):
        home, elsewhere = Path(self.mktemp()).resolve(), Path(self.mktemp()).resolve()
        home.mkdir()
        elsewhere.mkdir()
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(home)
        options = parse_options("--dev-certs", "mine")
        self.assertEqual(options["dev-certs"], home / "mine")
        [listen] = options["listen"]
        self.assertEqual({f.parent for f in listen.certificate_files()}, {home / "mine"})
        os.chdir(elsewhere)
        ensure_dev_certs(Settings.from_options(options).listeners)
        self.assertTrue((home / "mine" / "server.pem").exists())
        self.assertEqual(list(elsewhere.iterdir()), [])

    def test_never_generated_outside_the_dev_directory(self):
        elsewhere = Path(self.mktemp())
        options = parse_options(
            "--listen", f"ssl:0:privateKey={elsewhere}/k.pem:certKey={elsewhere}/c.pem"
        )
        ensure_dev_certs(Settings.from_options(options).listeners)
        self.assertFalse(elsewhere.exists())


class SettingsTests(unittest.TestCase):
    """The parsed options become one frozen `Settings` value, each part where it is used."""

    def test_each_option_lands_in_its_concern(self):
        settings = Settings.from_options(
            parse_options(
                "--max-line",
                "2048",
                "--http-max-body",
                "4096",
                "--tls-client-ca",
                "ca.pem",
                "--tls-client-cert",
                "optional",
                "--ws-allowed-origins",
                "https://a.example",
                "--history-max",
                "7",
                "--instance-id",
                "one",
                "--cluster-batch-interval",
                "0.004",
                "--http",
                "tcp:0",
            )
        )
        self.assertEqual(settings.limits.max_line, 2048)
        self.assertEqual(settings.http.api.max_line, 2048)
        self.assertEqual(settings.http.limits.max_body, 4096)
        self.assertEqual(settings.http.endpoint, "tcp:0")
        self.assertEqual(
            settings.listeners.tls, TlsPolicy(Path("ca.pem"), client_cert_required=False)
        )
        self.assertEqual(settings.websocket.origins, ("https://a.example",))
        self.assertEqual(settings.websocket.limits, settings.limits)
        self.assertEqual(settings.store.history_max, 7)
        self.assertEqual(settings.cluster.instance_id, "one")
        self.assertEqual(settings.cluster.batch_interval, 0.004)

    def test_no_http_api_is_no_http_settings(self):
        self.assertIsNone(Settings.from_options(parse_options("--http", "none")).http)

    def test_the_values_are_frozen(self):
        settings = Settings.from_options(parse_options())
        with self.assertRaises(attrs.exceptions.FrozenInstanceError):
            settings.limits = None
