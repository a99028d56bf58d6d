"""SQLite, the default store: one file, one instance, nothing to install.

Ids come from ``AUTOINCREMENT``, so they are never reused, not even after a trim
has emptied the table: a client's ``since`` stays right. The file is in WAL mode
with ``synchronous=NORMAL``: a committed line survives the process crashing (a
power cut may lose the last ones), and readers never wait for the writer.

Space goes back to the disk: the file is in ``auto_vacuum=INCREMENTAL`` mode
(a file made by an older nea is converted once, with a VACUUM at start), and
`compact` frees the pages trims emptied, then checkpoints the WAL and truncates
it; ``journal_size_limit`` keeps the WAL small between compactions too.
"""

import sqlite3
from datetime import datetime
from pathlib import Path

from nea.store.sql import Dialect

#: Seconds a connection waits for another's lock before the call fails.
BUSY_TIMEOUT = 2.0
#: Bytes the WAL is truncated to after a checkpoint.
WAL_LIMIT = 64 * 1024 * 1024
#: ``PRAGMA auto_vacuum`` value of INCREMENTAL.
INCREMENTAL = 2


class SQLite(Dialect):
    cluster_safe = False
    migrations = {
        1: [
            """CREATE TABLE chat_lines (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                kind TEXT NOT NULL CHECK (kind IN ('chat', 'broadcast')),
                name TEXT,
                body TEXT NOT NULL,
                said_at TEXT NOT NULL)"""
        ],
        2: [
            "ALTER TABLE chat_lines ADD COLUMN size INTEGER NOT NULL DEFAULT 0",
            "UPDATE chat_lines SET size = length(CAST(body AS BLOB))"
            " + coalesce(length(CAST(name AS BLOB)), 0)",
            "CREATE INDEX chat_lines_size ON chat_lines (id, size)",
        ],
    }

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{path}"

    def connect(self):
        # The default path is in a data directory a fresh checkout lacks.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes on a new file only
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def sql(self, statement: str) -> str:
        return statement.replace("%s", "?")

    def lock_schema(self, cursor) -> None:
        # DDL runs outside transactions unless one is begun; IMMEDIATE takes the write lock.
        cursor.execute("BEGIN IMMEDIATE")

    def prepare(self, connection) -> None:
        if connection.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
            connection.execute("VACUUM")  # a file from before: converted once

    def compact(self, cursor) -> None:
        # execute() steps the pragma once, freeing one page; a script runs it to the end.
        cursor.executescript("PRAGMA incremental_vacuum")
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def insert(self, cursor, rows: list[tuple]) -> list[int]:
        ids = []
        for row in rows:
            cursor.execute(
                "INSERT INTO chat_lines (kind, name, body, said_at, size)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                row,
            )
            ids.append(cursor.fetchone()[0])
        return ids

    def to_db(self, time: datetime) -> str:
        return time.isoformat()

    def from_db(self, value: str) -> datetime:
        return datetime.fromisoformat(value)
