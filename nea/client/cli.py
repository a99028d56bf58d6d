"""The ``nea-client`` command: options, wiring, output and exit codes.

Everything that decides anything lives in `nea.client.relay`,
`nea.client.interactive`, `nea.client.addressed` and `nea.client.status`; this
module turns the command line into those objects, prints what they report and
exits with a code a script can test (see `EXIT_*`).
"""

import argparse
import json
import sys
from collections.abc import Callable

from twisted.internet import defer, stdio, task
from twisted.internet.interfaces import IHalfCloseableProtocol, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

import nea
from nea.client.addressed import RegisterClient, ServeClient, ServeConfig
from nea.client.delays import Constant, Delay, Uniform
from nea.client.interactive import InteractiveClient
from nea.client.redial import DialConfig
from nea.client.relay import RelayClient, RelayConfig, RelayObserver
from nea.client.shell import ShellCommand
from nea.client.status import StatusError, fetch_status
from nea.tls.client import DEFAULT_CA, TLSConfigError, client_endpoint, client_tls_options
from nea.wire.backoff import Backoff
from nea.wire.codec import LineBuffer, LineTooLong

EXIT_OK = 0
#: Relay gave up, status failed, or interactive gave up.
EXIT_FAILED = 1
#: Bad command line or unreadable certificate files.
EXIT_USAGE = 2
#: The server's certificate was refused (wrong CA or host name).
EXIT_TLS = 3
#: register: another client registered the name.
EXIT_TAKEN_OVER = 4

RELAY_TIMEOUT = 30.0
STATUS_TIMEOUT = 10.0
#: Longest line read from the keyboard.
MAX_INPUT_LINE = 1024 * 1024


def _seconds(value: str) -> float:
    number = float(value)
    if not number >= 0:  # (nor is NaN)
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return number


def _positive_seconds(value: str) -> float:
    number = _seconds(value)
    if number == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number


def _ok_delay(value: str) -> Delay:
    low, _, high = value.partition(":")
    bounds = (_seconds(low), _seconds(high or low))
    if bounds[0] > bounds[1]:
        raise argparse.ArgumentTypeError(f"MIN must not exceed MAX in {value}")
    return Constant(bounds[0]) if bounds[0] == bounds[1] else Uniform(*bounds)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nea-client",
        description="Talk to a nea server. With no command: interactive mode (type lines, "
        "see labelled replies and pushes; 'exit' or Ctrl-D quits). 'relay TEXT' sends "
        "'message TEXT' and waits for 'ok TEXT', answering forwarded messages, reconnecting "
        "as needed. 'status' prints the server's status as JSON. 'register NAME' shows "
        "each request to NAME and sends what you type as the answer. 'serve SERVICE "
        "--reply-with COMMAND' answers each request to SERVICE with COMMAND's output.",
        epilog="Exit codes: 0 success; 1 relay gave up / status failed; 2 usage error; "
        "3 the server's certificate was refused; 4 register: the name was taken over.",
    )
    parser.add_argument("--version", action="version", version=f"nea-client {nea.__version__}")
    parser.add_argument(
        "command",
        nargs="?",
        choices=("relay", "status", "register", "serve"),
        help="default: interactive mode",
    )
    parser.add_argument(
        "text",
        nargs="*",
        help="relay: the text to relay (words are joined); register: the NAME; serve: the SERVICE",
    )
    net = parser.add_argument_group("connection")
    net.add_argument("--host", default="localhost", help="server name or address (localhost)")
    net.add_argument("--port", type=int, default=3443, help="server port (3443)")
    net.add_argument("--plain", action="store_true", help="plain TCP instead of TLS")
    net.add_argument(
        "--ca",
        default=str(DEFAULT_CA),
        metavar="FILE",
        help=f"CA file to verify the server ({DEFAULT_CA})",
    )
    net.add_argument(
        "--cert", metavar="FILE", help="client certificate (PEM) for servers that ask for one"
    )
    net.add_argument(
        "--key", metavar="FILE", help="the client certificate's key (default: in --cert)"
    )
    net.add_argument(
        "--server-name",
        metavar="NAME",
        help="name (or IP) the server's certificate must carry (default: --host)",
    )
    retry = parser.add_argument_group("reconnecting (interactive, relay, register, serve)")
    relay = parser.add_argument_group("relay and status")
    for group, name, kind, default, what in (
        (net, "--connect-timeout", _positive_seconds, 10.0, "seconds per dial (10)"),
        (retry, "--retry-initial", _positive_seconds, 0.5, "first backoff delay (0.5)"),
        (retry, "--retry-max", _positive_seconds, 30.0, "backoff cap (30)"),
        (
            retry,
            "--give-up",
            _seconds,
            0.0,
            "stop trying after this many seconds (0 = never); relay then exits 1",
        ),
        (
            relay,
            "--timeout",
            _seconds,
            None,
            f"relay: seconds from connecting until 'ok TEXT' (0 = none; {RELAY_TIMEOUT:g}); "
            f"status: seconds to wait for the answer (0 = no limit; {STATUS_TIMEOUT:g})",
        ),
    ):
        group.add_argument(name, type=kind, default=default, metavar="SECONDS", help=what)
    relay.add_argument(
        "--ok-delay",
        type=_ok_delay,
        default=Constant(0.0),
        metavar="MIN[:MAX]",
        help="relay: seconds before answering a forwarded message, drawn from MIN..MAX (0)",
    )
    relay.add_argument("--quiet", action="store_true", help="relay: no progress on stderr")
    serve = parser.add_argument_group("serve")
    serve.add_argument(
        "--reply-with",
        metavar="COMMAND",
        help="run through /bin/sh -c for each request: the body on stdin, stdout the reply",
    )
    serve.add_argument(
        "--max-running",
        type=_positive_int,
        default=8,
        metavar="N",
        help="commands running at once (8)",
    )
    serve.add_argument(
        "--max-queued",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="requests waiting for a free slot; past it the reply is an error (1000)",
    )
    serve.add_argument(
        "--command-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="kill a command (its process group) after this long (0 = never; 30)",
    )
    parser.add_argument(
        "--auto-ack", action="store_true", help="interactive: answer forwarded messages with ok"
    )
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if args.command == "relay":
        args.text = " ".join(args.text)
        if not args.text:
            parser.error("relay needs a TEXT")
        if "\n" in args.text or "\r" in args.text:
            parser.error("relay TEXT must be one line")
    elif args.command in ("register", "serve"):
        if len(args.text) != 1:
            what = "NAME" if args.command == "register" else "SERVICE"
            parser.error(f"{args.command} needs exactly one {what}")
        args.text = args.text[0]
        if (args.command == "serve") != (args.reply_with is not None):
            parser.error("--reply-with goes with serve, and serve needs it")
    elif args.text:
        parser.error(f"unexpected arguments: {' '.join(args.text)}")
    if args.retry_initial > args.retry_max:
        parser.error("--retry-initial must not exceed --retry-max")
    if args.key and not args.cert:
        parser.error("--key needs --cert")
    return args


def make_endpoint(reactor, args: argparse.Namespace):
    tls = None
    if not args.plain:
        tls = client_tls_options(args.server_name or args.host, args.ca, args.cert, args.key)
    return client_endpoint(reactor, args.host, args.port, tls, args.connect_timeout)


def dial_config(args: argparse.Namespace) -> DialConfig:
    return DialConfig(
        tls=not args.plain,
        backoff=Backoff(initial=args.retry_initial, maximum=args.retry_max),
        give_up=args.give_up,
        ca=None if args.plain else args.ca,
    )


def _exit_code(outcome: str | None) -> int:
    if outcome in ("acked", "quit", "closed"):
        return EXIT_OK
    if outcome == "taken_over":
        return EXIT_TAKEN_OVER
    return EXIT_TLS if outcome == "tls_failed" else EXIT_FAILED


# ---- relay ----


class RelayReporter(RelayObserver):
    """Progress of one relay on stderr, the ack on stdout, the exit code in ``done``."""

    def __init__(self, say: Callable[[str], None], shout: Callable[[str], None]) -> None:
        self.say = say
        self.shout = shout
        self.done: defer.Deferred = defer.Deferred()

    def on_connected(self, client: RelayClient) -> None:
        self.say(f"sent message {client.text} (attempt {client.sends})")

    def on_forwarded(self, client: RelayClient, text: str) -> None:
        self.say(f"forwarded to us: message {text}; answering ok")

    def on_acked(self, client: RelayClient) -> None:
        self.shout(f"ok {client.text}")
        # Set by RelayClient before it reports:
        assert client.acked_at is not None and client.started_at is not None
        self.say(f"acked after {client.acked_at - client.started_at:.3f} s")

    def on_retry(self, client: RelayClient, why: str, delay: float) -> None:
        self.say(f"{why}; retrying in {delay:.2f} s")

    def on_error(self, client: RelayClient, error) -> None:
        self.say(f"server said [{error.code}] {error.message}")

    def on_finished(self, client: RelayClient) -> None:
        assert client.outcome is not None  # set before it reports the end
        if client.outcome != "acked":
            self.say(f"{client.outcome}: {client.detail}" if client.detail else client.outcome)
        self.done.callback(_exit_code(client.outcome))


def _stderr(text: str) -> None:
    print(f"nea-client: {text}", file=sys.stderr, flush=True)


def _stdout(text: str) -> None:
    print(text, flush=True)


def run_relay(reactor, args: argparse.Namespace) -> defer.Deferred:
    config = RelayConfig(
        dial=dial_config(args),
        timeout=RELAY_TIMEOUT if args.timeout is None else args.timeout,
        ok_delay=args.ok_delay,
    )
    reporter = RelayReporter((lambda text: None) if args.quiet else _stderr, _stdout)
    client = RelayClient(args.text, make_endpoint(reactor, args), reactor, config, reporter)
    client.start()
    return reporter.done


# ---- status ----


def run_status(reactor, args: argparse.Namespace) -> defer.Deferred:
    timeout = STATUS_TIMEOUT if args.timeout is None else args.timeout or None

    def show(status) -> int:
        _stdout(json.dumps(status, indent=2, sort_keys=True))
        return EXIT_OK

    def fail(reason) -> int:
        if reason.check(defer.TimeoutError):
            _stderr(f"no status within {timeout:g} s")
        else:
            reason.trap(StatusError)
            _stderr(str(reason.value))
            if reason.value.tls_refused:
                return EXIT_TLS
        return EXIT_FAILED

    ca = None if args.plain else args.ca
    d = fetch_status(make_endpoint(reactor, args), reactor, not args.plain, timeout, ca)
    return d.addCallbacks(show, fail)


# ---- interactive ----


@implementer(IHalfCloseableProtocol)
class Terminal(Protocol):
    """stdin and stdout: typed lines go to the client, its lines are written out.

    Output goes through the stdio transport, not print(): StandardIO makes
    stdout non-blocking, and a blocking print could fail on a full pipe.
    """

    transport: ITransport  # twisted.internet.stdio.StandardIO

    def __init__(self) -> None:
        self.client: InteractiveClient  # set by _on_terminal before stdin is read
        self.closed: defer.Deferred = defer.Deferred()
        self._lines = LineBuffer(MAX_INPUT_LINE)

    def show(self, text: str) -> None:
        self.transport.write(text.encode("utf-8", errors="replace") + b"\n")

    def dataReceived(self, data: bytes) -> None:
        try:
            for line in self._lines.feed(data):
                self.client.user_line(line)
        except LineTooLong:
            self.show(f"[info] line longer than {MAX_INPUT_LINE} bytes; not sent")

    def readConnectionLost(self) -> None:
        self.client.user_done()

    def writeConnectionLost(self) -> None:
        self.client.user_done()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.client.user_done()
        self.closed.callback(None)


def _on_terminal(reactor, make_client) -> defer.Deferred:
    """Run ``make_client(show, over)`` with stdin and stdout; fires with the exit code."""
    terminal = Terminal()
    done: defer.Deferred = defer.Deferred()

    def over(client) -> None:
        terminal.transport.loseConnection()  # flushes what is still to be shown
        terminal.closed.addCallback(lambda _: done.callback(_exit_code(client.outcome)))

    terminal.client = make_client(terminal.show, over)
    stdio.StandardIO(terminal, reactor=reactor)
    terminal.client.start()
    return done


def run_interactive(reactor, args: argparse.Namespace) -> defer.Deferred:
    return _on_terminal(
        reactor,
        lambda show, over: InteractiveClient(
            make_endpoint(reactor, args),
            reactor,
            dial_config(args),
            show,
            over,
            auto_ack=args.auto_ack,
        ),
    )


# ---- register and serve ----


def run_register(reactor, args: argparse.Namespace) -> defer.Deferred:
    return _on_terminal(
        reactor,
        lambda show, over: RegisterClient(
            args.text,
            make_endpoint(reactor, args),
            reactor,
            dial_config(args),
            show,
            over,
        ),
    )


def run_serve(reactor, args: argparse.Namespace) -> defer.Deferred:
    done: defer.Deferred = defer.Deferred()
    config = ServeConfig(
        ShellCommand(args.reply_with, timeout=args.command_timeout),
        max_running=args.max_running,
        max_queued=args.max_queued,
    )
    ServeClient(
        args.text,
        config,
        make_endpoint(reactor, args),
        reactor,
        dial_config(args),
        _stdout,
        lambda client: done.callback(_exit_code(client.outcome)),
    ).start()
    return done


# ---- entry point ----

_MODES = {
    None: run_interactive,
    "relay": run_relay,
    "status": run_status,
    "register": run_register,
    "serve": run_serve,
}


def _run(reactor, args: argparse.Namespace) -> defer.Deferred:
    try:
        d = _MODES[args.command](reactor, args)
    except TLSConfigError as e:
        _stderr(str(e))
        d = defer.succeed(EXIT_USAGE)
    return d.addCallback(_exit_with)


def _exit_with(code: int) -> None:
    if code:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: ``nea-client [options] [MODE ...]`` (see `build_parser`)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    task.react(_run, [args])
