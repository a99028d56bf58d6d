"""Run one shell command per request: the body on stdin, the answer from stdout.

`ShellCommand.run` never blocks the reactor: the command is spawned with
``/bin/sh -c`` through ``reactor.spawnProcess`` and its outcome arrives as a
Deferred. Each run is a session of its own (``setsid``), so a timeout kills the
whole process group, pipelines and their children included, not only the shell.
Output is bounded: a command that prints more than ``max_output`` bytes is
killed, so one runaway command cannot fill the client's memory.
"""

import os
import signal

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol

SETSID = "/usr/bin/setsid"


@attrs.frozen
class Outcome:
    """How one run ended: ``output`` is stdout, trailing newline stripped; ``error`` is None
    on success, else a short human reason (non-zero exit, timeout, too much output)."""

    output: str
    error: str | None = None


class _Run(ProcessProtocol):
    """One spawned command: feeds stdin, gathers stdout (bounded), enforces the deadline."""

    transport: IProcessTransport

    def __init__(self, stdin: bytes, max_output: int) -> None:
        self.stdin = stdin
        self.max_output = max_output
        self.out = bytearray()
        self.err = bytearray()
        self.killed_because: str | None = None
        self.ended: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if len(self.out) > self.max_output:
            self.kill(f"more than {self.max_output} bytes of output")

    def errReceived(self, data: bytes) -> None:
        # Only the start of stderr is kept: it explains a failure, it is never replied.
        if len(self.err) < 1024:
            self.err += data[: 1024 - len(self.err)]

    def kill(self, because: str) -> None:
        if self.killed_because is not None or self.transport.pid is None:
            return
        self.killed_because = because
        try:
            os.killpg(self.transport.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone already; processEnded follows
            pass

    def processEnded(self, reason) -> None:
        self.ended.callback(self._outcome(reason.value.exitCode, reason.value.signal))

    def _outcome(self, code, sig) -> Outcome:
        output = self.out.decode("utf-8", "replace").removesuffix("\n")
        if self.killed_because is not None:
            return Outcome(output, f"killed: {self.killed_because}")
        if code == 0:
            return Outcome(output)
        said = self.err.decode("utf-8", "replace").strip().splitlines()
        why = f"exit status {code}" if code is not None else f"killed by signal {sig}"
        return Outcome(output, f"{why}: {said[0]}" if said else why)


@attrs.frozen
class ShellCommand:
    """``command`` run through ``/bin/sh -c``; ``timeout`` seconds per run (0: none)."""

    command: str
    timeout: float = 30.0
    max_output: int = 60_000

    def run(self, reactor, stdin: bytes) -> defer.Deferred:
        """Spawn one run fed ``stdin``; fires with its `Outcome` (never fails)."""
        run = _Run(stdin, self.max_output)
        argv = [SETSID, "/bin/sh", "-c", self.command]
        reactor.spawnProcess(run, argv[0], argv, env=dict(os.environ))
        if self.timeout:
            deadline = reactor.callLater(
                self.timeout, run.kill, f"no answer within {self.timeout:g} s"
            )

            def ended(outcome: Outcome) -> Outcome:
                if deadline.active():
                    deadline.cancel()
                return outcome

            run.ended.addCallback(ended)
        return run.ended
