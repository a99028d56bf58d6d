"""History in a SQL database (SQLite or PostgreSQL) through its blocking DB-API driver.

The drivers block, so each store runs them on two `Worker` threads, each with
its own connection: ``writes`` (schema, appends, trims) keeps appends in the
order they were asked for, and ``reads`` (since, latest) lets history be read
while a write is slow. Each call has a deadline on the injected reactor, and the
dialect sets the driver's own timeouts, so no thread waits for ever either.

Why threads and not psycopg's ``AsyncConnection``: it needs asyncio's event loop,
that is, the whole daemon (and the test runner) on Twisted's asyncio reactor,
for one component; one thread per connection keeps the reactor the operator's
choice, and SQLite (whose driver only blocks) goes the same way.

The schema is versioned: the ``nea_schema`` table holds the version, and
`open` brings an older one (0 is an empty database) up to `SCHEMA_VERSION`
in one transaction, under the dialect's migration lock. A newer version than
this nea knows is refused.
"""

from collections.abc import Sequence
from datetime import datetime

import attrs
from twisted.internet import defer

from nea.store.lines import (
    MAX_ID,
    Kind,
    Line,
    SchemaError,
    StoredLine,
    StoreError,
    check_count,
    octets,
)
from nea.store.worker import Worker

#: The schema version this nea writes; ``Dialect.migrations[v]`` brings v - 1 to v.
#: 2: each line's ``size`` (`octets`), indexed with its id, for ``--history-max-bytes``.
SCHEMA_VERSION = 2
#: Seconds any one call may take before it fails with `StoreError`.
TIMEOUT = 5.0

COLUMNS = "id, kind, name, body, said_at"


class Dialect:
    """What differs between databases: connecting, DDL, placeholders, times, ordering."""

    #: For status and errors, without secrets.
    name: str
    #: Whether instances of a cluster may share it.
    cluster_safe: bool
    #: SQL statements, per version, that bring the schema from the version before.
    migrations: dict[int, list[str]]

    def connect(self):
        raise NotImplementedError

    def sql(self, statement: str) -> str:
        """``statement``, written with ``%s`` placeholders, in the driver's style."""
        return statement

    def lock_schema(self, cursor) -> None:
        """Make the migration exclusive (two instances may start at once)."""
        raise NotImplementedError

    def insert(self, cursor, rows: list[tuple]) -> list[int]:
        """Insert ``rows`` (kind, name, body, said_at, size) in order; their ids."""
        raise NotImplementedError

    def prepare(self, connection) -> None:
        """What must be done once, outside any transaction, before the store is used."""

    def compact(self, cursor) -> None:
        """Give the space of deleted lines back."""
        raise NotImplementedError

    def clean(self, text: str) -> str:
        """``text`` as the database can hold it: lone surrogates (no UTF-8) become U+FFFD.

        One client's odd line must not fail the batch it is in, and degrade
        history for everyone.
        """
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")

    def to_db(self, time: datetime):
        return time

    def from_db(self, value) -> datetime:
        return value


class SQLStore:
    """A `HistoryStore` on a `Dialect`."""

    enabled = True

    def __init__(self, dialect: Dialect, reactor, timeout: float = TIMEOUT) -> None:
        self.name = dialect.name
        self.cluster_safe = dialect.cluster_safe
        self._dialect = dialect
        self._reactor = reactor
        self._timeout = timeout
        self._writes = Worker(dialect.connect, reactor, "nea-store-writes")
        self._reads = Worker(dialect.connect, reactor, "nea-store-reads")

    def open(self):
        self._writes.start()
        self._reads.start()
        return self._call(self._writes, _migrate, self._dialect)

    def open_now(self) -> None:
        """Create or migrate the schema on this thread, at start, before the reactor runs.

        `SchemaError` for a newer schema, `StoreError` (one line) for anything else;
        the driver's own timeouts bound the wait. `open` is still to be called.
        """
        try:
            connection = self._dialect.connect()
            try:
                _migrate(connection.cursor(), self._dialect)
                connection.commit()
                self._dialect.prepare(connection)
            finally:
                connection.close()
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"{self.name}: {one_line(e)}") from None

    def append(self, lines: Sequence[Line]):
        return self._call(self._writes, _append, self._dialect, list(lines))

    def since(self, last_id: int, limit: int):
        check_count("limit", limit)
        return self._call(
            self._reads,
            _select,
            self._dialect,
            f"SELECT {COLUMNS} FROM chat_lines WHERE id > %s ORDER BY id LIMIT %s",
            (min(check_count("last_id", last_id), MAX_ID), limit),
        )

    def latest(self, count: int):
        check_count("count", count)
        return self._call(
            self._reads,
            _select,
            self._dialect,
            f"SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM chat_lines"
            " ORDER BY id DESC LIMIT %s) AS newest ORDER BY id",
            (count,),
        )

    def probe(self):
        return self._call(self._writes, _probe, self._dialect)

    def trim(self, keep: int | None, most: int, keep_bytes: int | None = None):
        for what, count in (("keep", keep), ("keep_bytes", keep_bytes)):
            if count is not None:
                check_count(what, count)
        check_count("most", most)
        return self._call(self._writes, _trim, self._dialect, keep, most, keep_bytes)

    def compact(self):
        return self._call(self._writes, _compact, self._dialect)

    def close(self):
        """Closed when the threads have closed their connections, or at the timeout
        (a thread still in a call ends when the driver gives up on it)."""
        closing = defer.gatherResults([self._writes.stop(), self._reads.stop()])
        closed = defer.Deferred()
        closing.addBoth(_fire, closed)
        return closed.addTimeout(self._timeout, self._reactor).addErrback(_given_up)

    def _call(self, worker: Worker, work, *args):
        done = worker.run(work, *args).addTimeout(self._timeout, self._reactor)
        return done.addErrback(self._failed)

    def _failed(self, failure):
        if failure.check(StoreError):
            return failure
        if failure.check(defer.TimeoutError):
            raise StoreError(f"{self.name}: no answer within {self._timeout:g} s")
        raise StoreError(f"{self.name}: {one_line(failure.value)}")


def _fire(_, waiter: defer.Deferred) -> None:
    if not waiter.called:  # not given up on
        waiter.callback(None)


def _given_up(failure) -> None:
    failure.trap(defer.TimeoutError)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _migrate(cursor, dialect: Dialect) -> None:
    dialect.lock_schema(cursor)
    cursor.execute("CREATE TABLE IF NOT EXISTS nea_schema (version INTEGER NOT NULL)")
    cursor.execute("SELECT max(version) FROM nea_schema")
    version = cursor.fetchone()[0] or 0
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{dialect.name}: the history schema is version {version}, newer than this nea's"
            f" {SCHEMA_VERSION}: run a newer nea, or point --store elsewhere"
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for statement in dialect.migrations[step]:
            cursor.execute(statement)
    if version < SCHEMA_VERSION:
        cursor.execute("DELETE FROM nea_schema")
        cursor.execute(
            dialect.sql("INSERT INTO nea_schema (version) VALUES (%s)"), (SCHEMA_VERSION,)
        )


def _append(cursor, dialect: Dialect, lines: list[Line]) -> list[StoredLine]:
    if not lines:
        return []
    # What is fanned out is what was stored, cleaned or not.
    lines = [
        attrs.evolve(
            line, name=line.name and dialect.clean(line.name), text=dialect.clean(line.text)
        )
        for line in lines
    ]
    rows = [
        (line.kind.value, line.name, line.text, dialect.to_db(line.time), octets(line))
        for line in lines
    ]
    ids = dialect.insert(cursor, rows)
    return [line.stored(id) for line, id in zip(lines, ids, strict=True)]


def _probe(cursor, dialect: Dialect) -> None:
    # A write that changes nothing, yet needs the database to take a write (journal, disk).
    cursor.execute("UPDATE nea_schema SET version = version")


def _select(cursor, dialect: Dialect, statement: str, params: tuple) -> list[StoredLine]:
    cursor.execute(dialect.sql(statement), params)
    return [
        StoredLine(id, Kind(kind), name, body, dialect.from_db(said_at))
        for id, kind, name, body, said_at in cursor.fetchall()
    ]


#: The newest line past the newest ``keep`` lines; past the newest that hold ``keep_bytes``.
OLD_BY_COUNT = "SELECT id FROM chat_lines ORDER BY id DESC LIMIT 1 OFFSET %s"
OLD_BY_BYTES = (
    "SELECT id FROM (SELECT id, SUM(size) OVER (ORDER BY id DESC) AS newer"
    " FROM chat_lines) AS sized WHERE newer > %s ORDER BY id DESC LIMIT 1"
)


def _trim(cursor, dialect: Dialect, keep: int | None, most: int, keep_bytes: int | None) -> int:
    # Lines up to the newest old one are old; delete the oldest ``most`` of them.
    newest_old = 0
    for statement, bound in ((OLD_BY_COUNT, keep), (OLD_BY_BYTES, keep_bytes)):
        if bound is not None:
            cursor.execute(dialect.sql(statement), (bound,))
            row = cursor.fetchone()
            newest_old = max(newest_old, row[0] if row else 0)
    if not newest_old:
        return 0
    cursor.execute(
        dialect.sql(
            "DELETE FROM chat_lines WHERE id IN"
            " (SELECT id FROM chat_lines WHERE id <= %s ORDER BY id LIMIT %s)"
        ),
        (newest_old, most),
    )
    return cursor.rowcount


def _compact(cursor, dialect: Dialect) -> None:
    dialect.compact(cursor)
