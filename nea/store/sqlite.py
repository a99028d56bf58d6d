"""SQLite, the default store: one file, one instance, nothing to install.

Ids come from ``AUTOINCREMENT``, so they are never reused, not even after a trim
has emptied the table: a client's ``since`` stays right. The file is in WAL mode
with ``synchronous=NORMAL``: a committed line survives the process crashing (a
power cut may lose the last ones), and readers never wait for the writer.
"""

import sqlite3
from datetime import datetime
from pathlib import Path

from nea.store.sql import Dialect

#: Seconds a connection waits for another's lock before the call fails.
BUSY_TIMEOUT = 2.0


class SQLite(Dialect):
    cluster_safe = False
    migrations = {
        1: ["""CREATE TABLE chat_lines (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                kind TEXT NOT NULL CHECK (kind IN ('chat', 'broadcast')),
                name TEXT,
                body TEXT NOT NULL,
                said_at TEXT NOT NULL)"""],
    }

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{path}"

    def connect(self):
        # The default path is in a data directory a fresh checkout lacks.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def sql(self, statement: str) -> str:
        return statement.replace("%s", "?")

    def lock_schema(self, cursor) -> None:
        # DDL runs outside transactions unless one is begun; IMMEDIATE takes the write lock.
        cursor.execute("BEGIN IMMEDIATE")

    def insert(self, cursor, rows: list[tuple]) -> list[int]:
        ids = []
        for row in rows:
            cursor.execute("INSERT INTO chat_lines (kind, name, body, said_at)"
                           " VALUES (?, ?, ?, ?) RETURNING id", row)
            ids.append(cursor.fetchone()[0])
        return ids

    def to_db(self, time: datetime) -> str:
        return time.isoformat()

    def from_db(self, value: str) -> datetime:
        return datetime.fromisoformat(value)
