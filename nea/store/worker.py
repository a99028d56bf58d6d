"""One thread with one database connection, for blocking DB-API drivers.

Work runs on the thread in the order it was asked for, inside a transaction that
is committed when the work returns. After any error the connection is closed and
the next call makes a new one: a half-done transaction cannot leak into the next
call, a broken connection is never reused, and a database that comes back is
reconnected to without anyone asking.

Why not ``twisted.enterprise.adbapi``, which does much the same: when a
connection breaks, its rollback path logs a traceback (``log.err``) on every
call, which is what a database outage looks like all day; and its pool hands
work to any of its threads, while appends must stay in order.
"""

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool


class Worker:
    def __init__(self, connect: Callable[[], Any], reactor, name: str) -> None:
        self._connect = connect
        self._reactor = reactor
        self._name = name
        self._pool: ThreadPool | None = None
        self._connection = None

    def start(self) -> None:
        """Start a thread (a stopped pool cannot be started again: each start makes one)."""
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name=self._name)
            self._pool.start()

    def run(self, work: Callable[..., Any], *args: Any):
        """Deferred result of ``work(cursor, *args)``, run on the thread in a transaction."""
        if self._pool is None:
            return defer.fail(RuntimeError(f"{self._name} is not started"))
        return deferToThreadPool(self._reactor, self._pool, self._transact, work, args)

    def stop(self):
        """Close the connection on the thread, then end the thread.

        The thread ends once the work in hand is done (the driver's own timeouts
        bound it: see the dialects), so that joining it never blocks the reactor.
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return defer.succeed(None)
        closing = deferToThreadPool(self._reactor, pool, self._disconnect)
        return closing.addBoth(lambda result: pool.stop())

    def _transact(self, work, args):
        if self._connection is None:
            self._connection = self._connect()
        try:
            result = work(self._connection.cursor(), *args)
            self._connection.commit()
            return result
        except BaseException:
            self._disconnect()
            raise

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass  # it was broken already; closing is a courtesy
