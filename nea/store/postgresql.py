"""PostgreSQL, the store a cluster shares, through psycopg 3.

Ids are cluster-wide and ordered, and more: a line with a higher id is never
visible before one with a lower id. An identity column alone does not give that
(two instances take ids 10 and 11, and 11 commits first: a reader then sees 11
without 10, and ``since 11`` would skip 10 for good), so every append takes the
transaction-scoped advisory lock `WRITE_LOCK` before it takes ids, and holds it
until it commits. Appends are batched (one transaction per batch of the
writer), so the lock costs one round trip per batch, not per line.

The driver's own timeouts bound every blocking call on the worker threads: the
connection attempt, each statement (waits for the lock included), and a
peer that stops answering (TCP user timeout and keepalives). Settings given in
the URL win over these defaults.
"""

from datetime import UTC, datetime
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from nea.store.lines import StoreError
from nea.store.sql import Dialect

#: Advisory lock keys (arbitrary, fixed: part of the schema's contract with other writers).
WRITE_LOCK = 0x6E65_6101
MIGRATE_LOCK = 0x6E65_6102
#: Seconds: connecting, one statement, an unanswered peer.
CONNECT_TIMEOUT = 3
STATEMENT_TIMEOUT = 4
PEER_TIMEOUT = 5

DRIVER_DEFAULTS = {
    "connect_timeout": str(CONNECT_TIMEOUT),
    "tcp_user_timeout": str(PEER_TIMEOUT * 1000),
    "keepalives": "1",
    "keepalives_idle": str(PEER_TIMEOUT),
    "keepalives_interval": "1",
    "keepalives_count": str(PEER_TIMEOUT),
    "application_name": "nea",
}


class PostgreSQL(Dialect):
    cluster_safe = True
    migrations = {
        1: [
            """CREATE TABLE chat_lines (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                kind TEXT NOT NULL CHECK (kind IN ('chat', 'broadcast')),
                name TEXT,
                body TEXT NOT NULL,
                said_at TIMESTAMPTZ NOT NULL)"""
        ],
        # The sizes of a big history take longer than a statement may: this transaction only.
        2: [
            "SET LOCAL statement_timeout = 0",
            "ALTER TABLE chat_lines ADD COLUMN size INTEGER NOT NULL DEFAULT 0",
            "UPDATE chat_lines SET size = octet_length(body) + coalesce(octet_length(name), 0)",
            "CREATE INDEX chat_lines_size ON chat_lines (id, size)",
        ],
    }

    def __init__(self, url: str, statement_timeout: float = STATEMENT_TIMEOUT) -> None:
        try:
            given = conninfo_to_dict(url)
        except psycopg.Error as e:
            raise StoreError(f"--store: not a PostgreSQL URL: {' '.join(str(e).split())}") from e
        self.params = {**DRIVER_DEFAULTS, **given}
        self.name = public_url(url)
        self.statement_timeout = statement_timeout

    def connect(self):
        connection = psycopg.connect(**self.params)
        connection.execute(f"SET statement_timeout = {int(self.statement_timeout * 1000)}")
        connection.commit()
        return connection

    def clean(self, text: str) -> str:
        # PostgreSQL's text cannot hold NUL.
        return super().clean(text).replace("\x00", "\ufffd")

    def lock_schema(self, cursor) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))

    def insert(self, cursor, rows: list[tuple]) -> list[int]:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        cursor.executemany(
            "INSERT INTO chat_lines (kind, name, body, said_at, size)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            rows,
            returning=True,
        )
        ids = [cursor.fetchone()[0]]
        while cursor.nextset():
            ids.append(cursor.fetchone()[0])
        return ids

    def compact(self, cursor) -> None:
        # VACUUM cannot run in a transaction; none is open between two calls of a worker.
        # It makes the deleted rows' space reusable, so the table stops growing (VACUUM
        # FULL would give it to the disk but lock out every append meanwhile).
        connection = cursor.connection
        connection.autocommit = True
        try:
            cursor.execute("VACUUM chat_lines")
        finally:
            connection.autocommit = False

    def from_db(self, value: datetime) -> datetime:
        return value.astimezone(UTC)


def public_url(url: str) -> str:
    """``url`` without its password or query, for status and logs."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        raise StoreError(f"--store: bad port in the PostgreSQL URL {parts.netloc!r}") from None
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"
