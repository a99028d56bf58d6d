"""Server CPU per new TLS connection, against a bare pyOpenSSL handshake in the same run.

- bare: server and client `OpenSSL.SSL.Connection` objects handshake through
  memory BIOs in this process, with the daemon's certificate and key; only the
  CPU time spent in the server object's calls is counted.
- daemon: N clients (a `holders.py` child) connect over TLS to a fresh daemon,
  complete the handshake, and close; the daemon's CPU (utime + stime from /proc)
  divided by N. The same over plain TCP gives what a connection costs without TLS.

    .venv/bin/python bench/tls_handshake.py [--connections 2000]
"""

import argparse
import time

import harness
from OpenSSL import SSL


def bare(certs_dir, count: int) -> tuple[float, float]:
    """CPU seconds per handshake: (server side, client side)."""
    server_ctx = SSL.Context(SSL.TLS_METHOD)
    server_ctx.use_privatekey_file(str(certs_dir / "server-key.pem"))
    server_ctx.use_certificate_file(str(certs_dir / "server.pem"))
    client_ctx = SSL.Context(SSL.TLS_METHOD)
    client_ctx.load_verify_locations(str(certs_dir / "ca.pem"))
    client_ctx.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: bool(ok))
    spent = {"server": 0.0, "client": 0.0}

    def step(side: str, connection) -> bool:
        started = time.process_time()
        try:
            connection.do_handshake()
            return True
        except SSL.WantReadError:
            return False
        finally:
            spent[side] += time.process_time() - started

    for _ in range(count):
        server = SSL.Connection(server_ctx, None)
        server.set_accept_state()
        client = SSL.Connection(client_ctx, None)
        client.set_connect_state()
        client.set_tlsext_host_name(b"localhost")
        done = {"server": False, "client": False}
        for _ in range(10):  # a TLS 1.3 handshake takes two flights each way
            done["client"] = done["client"] or step("client", client)
            _pump(client, server)
            done["server"] = done["server"] or step("server", server)
            _pump(server, client)
            if all(done.values()):
                break
        else:
            raise RuntimeError("the bare handshake did not complete")
    return spent["server"] / count, spent["client"] / count


def _pump(source, sink) -> None:
    try:
        sink.bio_write(source.bio_read(1 << 16))
    except SSL.WantReadError:
        pass


def daemon_cost(transport: str, certs_dir, count: int) -> float:
    """The daemon's CPU seconds per connection (accept, handshake, register, close)."""
    listen = harness.tls("relay", certs_dir) if transport == "tls" else harness.tcp("relay")
    with harness.Daemon(listen, max_clients=count + 10) as daemon:
        time.sleep(0.5)
        before = daemon.cpu()
        holders = harness.Holders(
            daemon.ports[0], count, "hold", ca=certs_dir / "ca.pem" if transport == "tls" else None
        )
        holders.ready()
        holders.finish()
        time.sleep(0.5)  # the daemon handles the closes
        return (daemon.cpu() - before) / count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=2000)
    args = p.parse_args()
    harness.header(f"tls_handshake: {args.connections} connections")
    certs_dir = harness.certs()
    server, client = bare(certs_dir, args.connections)
    tls = daemon_cost("tls", certs_dir, args.connections)
    tcp = daemon_cost("tcp", certs_dir, args.connections)
    print(
        f"bare pyOpenSSL handshake (ECDSA P-256): server side {server * 1e6:.0f} us, "
        f"client side {client * 1e6:.0f} us"
    )
    print(
        f"daemon, per TLS connection: {tls * 1e6:.0f} us "
        f"({tls / server:.2f}x the bare server-side handshake)"
    )
    print(
        f"daemon, per plain TCP connection: {tcp * 1e6:.0f} us; "
        f"TLS adds {(tls - tcp) * 1e6:.0f} us, of which the handshake itself is "
        f"{server * 1e6:.0f} us",
        flush=True,
    )


if __name__ == "__main__":
    main()
