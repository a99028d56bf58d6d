"""A local cluster in one command (``make run-cluster``): redis-server, two nea
instances and HAProxy on loopback, stopped together on Ctrl-C.

The shape is the deployed one (docs/cluster.rst, deploy/haproxy.cfg): clients
connect to HAProxy, which passes TLS through to the instances' ``+proxy``
listeners; the instances share one Redis and, when PostgreSQL is installed, one
history store (otherwise ``--store none``). Each program runs in its own process
group, so Ctrl-C reaches only this script, which stops HAProxy first, then the
instances (which drain), then Redis and PostgreSQL. If any of them exits on its
own, everything is stopped and the exit status is 1.

    python deploy/run_cluster.py [--store auto|none|postgresql] [--port 3443] ...

Only the standard library: it runs before anything else works.
"""

import argparse
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Seconds a program may take to listen, and to stop before it is killed.
START_TIMEOUT, STOP_TIMEOUT = 30.0, 15.0
#: PostgreSQL refuses to run as root; run as root, it runs as this user.
POSTGRESQL_USER = "nobody"


class Program:
    """One child process, its log file, and the port that shows it is up."""

    def __init__(self, name: str, argv: list[str], log: Path, port: int | None,
                 env: dict | None = None, user: pwd.struct_passwd | None = None,
                 stop_signal: int = signal.SIGTERM) -> None:
        self.name, self.log, self.port, self.stop_signal = name, log, port, stop_signal
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=ROOT, start_new_session=True,  # Ctrl-C is for this script alone
                user=user.pw_uid if user else None, group=user.pw_gid if user else None)

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise Failed(f"{self.name} exited with status {self.process.returncode}", self)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise Failed(f"{self.name} not listening on {self.port} "
                                 f"after {START_TIMEOUT:g} s", self) from None
                time.sleep(0.1)

    def signal(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)

    def wait_stopped(self) -> None:
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        print(f"stopped {self.name} (pid {self.process.pid})", flush=True)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Failed(Exception):
    def __init__(self, message: str, program: Program) -> None:
        super().__init__(message)
        self.program = program


def postgresql_bin(program: str) -> str | None:
    """The newest installed PostgreSQL's ``program`` (Debian keeps them off PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"),
                   key=lambda path: int(Path(path).parent.parent.name))
    return found[-1] if found else shutil.which(program)


def start_postgresql(port: int, scratch: Path, logs: Path) -> tuple[Program, str]:
    user = pwd.getpwnam(POSTGRESQL_USER) if os.getuid() == 0 else None
    data = scratch / "postgresql"
    data.mkdir()
    if user is not None:
        os.chown(scratch, user.pw_uid, user.pw_gid)
        os.chown(data, user.pw_uid, user.pw_gid)
    print("initialising PostgreSQL (a few seconds)...", flush=True)
    subprocess.run([postgresql_bin("initdb"), "-D", str(data), "-U", "nea", "--auth=trust",
                    "-E", "UTF8", "--no-locale", "--no-sync"], check=True, capture_output=True,
                   timeout=120, user=user.pw_uid if user else None,
                   group=user.pw_gid if user else None)
    program = Program("postgres", [postgresql_bin("postgres"), "-D", str(data), "-p", str(port),
                                   "-c", "listen_addresses=127.0.0.1",
                                   "-c", "unix_socket_directories="],
                      logs / "postgres.log", port, user=user, stop_signal=signal.SIGINT)
    return program, f"postgresql://nea@127.0.0.1:{port}/postgres"


def wait_for_members(http_ports: list[int]) -> None:
    """Until every instance's status lists them all (each has heard the others' heartbeats)."""
    deadline = time.monotonic() + START_TIMEOUT
    waiting = list(http_ports)
    while waiting and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{waiting[0]}/status", timeout=2) as r:
                if len(json.load(r)["cluster"]["members"]) >= len(http_ports):
                    waiting.pop(0)
                    continue
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    if waiting:
        print(f"warning: the instances did not all see each other within {START_TIMEOUT:g} s",
              flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", choices=("auto", "none", "postgresql"), default="auto",
                   help="history store: PostgreSQL when it is installed (auto), or none")
    p.add_argument("--port", type=int, default=3443, help="HAProxy, where clients connect")
    p.add_argument("--instance-ports", type=int, nargs=2, default=(3444, 3445),
                   help="the instances' +proxy TLS listeners")
    p.add_argument("--http-ports", type=int, nargs=2, default=(3001, 3002),
                   help="the instances' HTTP APIs (status page, chat page)")
    p.add_argument("--redis-port", type=int, default=6390)
    p.add_argument("--postgresql-port", type=int, default=5440)
    p.add_argument("--certs", type=Path, default=ROOT / "certs",
                   help="server-key.pem, server.pem and ca.pem (make certs makes them)")
    p.add_argument("--admin-token-file", type=Path, default=ROOT / "certs" / "admin-token")
    p.add_argument("--logs", type=Path, help="where the programs' logs go (default: a new "
                                             "temporary directory)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    missing = [p for p in ("redis-server", "haproxy") if shutil.which(p) is None]
    if args.store == "postgresql" and postgresql_bin("postgres") is None:
        missing.append("postgresql")
    if missing:
        print(f"missing: {', '.join(missing)} (make system-packages installs them)",
              file=sys.stderr)
        return 2
    # The programs run in the checkout: paths given relative to here are made absolute.
    certs, token = args.certs.resolve(), args.admin_token_file.resolve()
    for needed in (certs / "server-key.pem", certs / "server.pem", token):
        if not needed.exists():
            print(f"missing: {needed} (make certs makes it)", file=sys.stderr)
            return 2
    use_postgresql = args.store == "postgresql" or (
        args.store == "auto" and postgresql_bin("postgres") is not None)
    logs = args.logs.resolve() if args.logs else Path(tempfile.mkdtemp(prefix="nea-cluster-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="nea-cluster-"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")])))
    started: list[Program] = []
    try:
        store = "none"
        if use_postgresql:
            postgres, store = start_postgresql(args.postgresql_port, scratch, logs)
            started.append(postgres)
            postgres.wait_listening()
        redis = Program("redis-server", [
            "redis-server", "--port", str(args.redis_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(scratch)], logs / "redis.log", args.redis_port)
        started.append(redis)
        redis.wait_listening()
        files = f"interface=127.0.0.1:privateKey={certs}/server-key.pem:certKey={certs}/server.pem"
        instances = []
        for i, (port, http) in enumerate(zip(args.instance_ports, args.http_ports), 1):
            instances.append(Program(f"nea{i}", [
                sys.executable, "-m", "twisted", "--log-format", "text", "nea-server",
                "--instance-id", f"nea{i}",
                "--redis", f"redis://127.0.0.1:{args.redis_port}/0", "--cluster-name", "local",
                "--store", store, "--http", f"tcp:{http}:interface=127.0.0.1",
                "--listen", f"nea+proxy=ssl:{port}:{files}",
                "--admin-token-file", str(token)], logs / f"nea{i}.log", port, env))
        started.extend(instances)
        for instance in instances:
            instance.wait_listening()
        proxy_env = dict(os.environ, NEA_BIND=f"127.0.0.1:{args.port}", NEA_MAXCONN="1000",
                         NEA_SERVER1=f"127.0.0.1:{args.instance_ports[0]}",
                         NEA_SERVER2=f"127.0.0.1:{args.instance_ports[1]}")
        proxy = Program("haproxy", ["haproxy", "-db", "-f", str(ROOT / "deploy/haproxy.cfg")],
                        logs / "haproxy.log", args.port, proxy_env)
        started.append(proxy)
        proxy.wait_listening()
        wait_for_members(list(args.http_ports))
        print(banner(args, store, started, logs), flush=True)
        return wait(started)
    except Failed as e:
        print(f"{e}; its log ({e.program.log}) ends:\n{e.program.tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(started)
        shutil.rmtree(scratch, ignore_errors=True)


def banner(args, store: str, started: list[Program], logs: Path) -> str:
    pids = ", ".join(f"{p.name} {p.process.pid}" for p in started)
    lines = ["", "nea cluster on loopback; Ctrl-C stops it all.",
             f"  clients (TLS via HAProxy)  127.0.0.1:{args.port}   "
             f".venv/bin/nea-client --port {args.port}"]
    for i, (port, http) in enumerate(zip(args.instance_ports, args.http_ports), 1):
        lines.append(f"  instance nea{i}             127.0.0.1:{port} (+proxy)   "
                     f"status http://127.0.0.1:{http}/  chat http://127.0.0.1:{http}/chat")
    lines += [f"  redis                      redis://127.0.0.1:{args.redis_port}/0 "
              "(cluster name local)",
              f"  history store              {store}",
              f"  logs                       {logs}",
              f"  pids                       {pids}", ""]
    return "\n".join(lines)


def wait(started: list[Program]) -> int:
    """Until Ctrl-C (or SIGTERM): 0; or until a program exits on its own: 1."""
    watched = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    while True:
        info = signal.sigtimedwait(watched, 1.0)
        if info is not None and info.si_signo != signal.SIGCHLD:
            print("stopping...", flush=True)
            return 0
        for program in started:
            if program.process.poll() is not None:
                print(f"{program.name} exited with status {program.process.returncode}; its log "
                      f"({program.log}) ends:\n{program.tail()}", file=sys.stderr, flush=True)
                return 1


def stop(started: list[Program]) -> None:
    """HAProxy first (no new clients), then the instances together, then Redis and PostgreSQL."""
    for kind in ("haproxy", "nea", "redis-server", "postgres"):
        group = [p for p in started if p.name.rstrip("0123456789") == kind]
        for program in group:
            program.signal()
        for program in group:
            program.wait_stopped()

if __name__ == "__main__":
    sys.exit(main())
