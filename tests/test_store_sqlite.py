"""The SQLite store on real files in a temporary directory."""

import sqlite3
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.trial import unittest

from nea.store.lines import StoreError
from nea.store.sql import SCHEMA_VERSION, SQLStore
from nea.store.sqlite import SQLite
from nea.store.trimmer import Trimmer
from nea.store.url import parse_store
from nea.store.writer import OK, StoreWriter
from tests.store_contract import StoreContract, lines


class SQLiteTestCase(unittest.TestCase):
    def setUp(self):
        self.path = Path(self.mktemp()) / "var" / "history.db"  # its directory does not exist yet
        self.store = self.opened()
        return self.store.open()

    def opened(self) -> SQLStore:
        store = parse_store(f"sqlite:{self.path}", reactor)
        self.addCleanup(store.close)
        return store

    def schema_version(self) -> int:
        with sqlite3.connect(self.path) as db:
            return db.execute("SELECT version FROM nea_schema").fetchall()


class SQLiteContractTests(StoreContract, SQLiteTestCase):
    pass


class SQLiteFileTests(SQLiteTestCase):
    def test_open_creates_the_versioned_schema(self):
        self.assertEqual(self.schema_version(), [(SCHEMA_VERSION,)])
        with sqlite3.connect(self.path) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        self.assertLessEqual({"nea_schema", "chat_lines"}, tables)
        self.assertEqual(mode, "wal")

    @defer.inlineCallbacks
    def test_history_survives_reopening(self):
        first = yield self.store.append(lines("a", "b"))
        yield self.store.close()
        again = self.opened()
        yield again.open()
        self.assertEqual(self.schema_version(), [(SCHEMA_VERSION,)])  # not migrated twice
        self.assertEqual((yield again.since(0, 10)), first)
        [third] = yield again.append(lines("c"))
        self.assertEqual(third.id, first[-1].id + 1)

    @defer.inlineCallbacks
    def test_an_empty_database_is_migrated_from_version_zero(self):
        yield self.store.close()
        self.path.unlink()
        sqlite3.connect(self.path).close()  # an empty file: version 0
        again = self.opened()
        yield again.open()
        self.assertEqual(self.schema_version(), [(SCHEMA_VERSION,)])

    @defer.inlineCallbacks
    def test_a_newer_schema_is_refused_in_one_line(self):
        yield self.store.close()
        with sqlite3.connect(self.path) as db:
            db.execute("UPDATE nea_schema SET version = ?", (SCHEMA_VERSION + 1,))
        again = self.opened()
        failure = yield self.assertFailure(again.open(), StoreError)
        self.assertIn(f"version {SCHEMA_VERSION + 1}, newer than", str(failure))
        self.assertNotIn("\n", str(failure))

    @defer.inlineCallbacks
    def test_a_file_that_is_no_database_fails_in_one_line_and_the_writer_degrades(self):
        yield self.store.close()
        self.path.write_bytes(b"this is not a database\n" * 100)
        broken = self.opened()
        failure = yield self.assertFailure(broken.open(), StoreError)
        self.assertIn(f"sqlite:{self.path}", str(failure))
        writer = StoreWriter(broken, reactor)
        said = yield writer.write(lines("unsaved")[0])
        self.assertIsNone(said.id)
        self.assertEqual((writer.status.state, writer.status.unsaved), ("degraded", 1))
        yield writer.stop()

    def on_disk(self) -> int:
        return sum(
            path.stat().st_size
            for path in self.path.parent.iterdir()
            if path.name.startswith(self.path.name)
        )

    @defer.inlineCallbacks
    def test_history_bounded_in_bytes_gives_the_space_back_to_the_disk(self):
        yield self.store.close()
        self.store = self.opened()  # a fresh one, not read by the setUp's threads
        yield self.store.open()
        for _ in range(5):  # 1.6 MB of lines, 5 transactions
            yield self.store.append(lines(*("x" * 4000 for _ in range(80))))
        before = self.on_disk()
        self.assertGreater(before, 1_600_000)
        trimmer = Trimmer(self.store, None, reactor, keep_bytes=100_000)
        yield trimmer.trim()
        self.assertEqual(trimmer.failures, 0)
        kept = yield self.store.since(0, 1000)
        self.assertEqual(len(kept), 24)  # 24 lines of 4,003 bytes fit in 100,000
        self.assertLess(self.on_disk(), 400_000)  # the database and its WAL shrank

    @defer.inlineCallbacks
    def test_a_file_from_before_is_converted_and_its_sizes_counted(self):
        yield self.store.close()
        self.path.unlink()
        with sqlite3.connect(self.path) as db:  # version 1: no auto_vacuum, no size column
            db.execute(SQLite.migrations[1][0])
            db.execute("CREATE TABLE nea_schema (version INTEGER NOT NULL)")
            db.execute("INSERT INTO nea_schema VALUES (1)")
            db.execute(
                "INSERT INTO chat_lines (kind, name, body, said_at)"
                " VALUES ('chat', 'ann', 'héllo', '2024-05-06T07:08:09+00:00')"
            )
        db.close()
        again = self.opened()
        again.open_now()
        yield again.open()
        with sqlite3.connect(self.path) as db:
            self.assertEqual(db.execute("PRAGMA auto_vacuum").fetchone()[0], 2)
            self.assertEqual(db.execute("SELECT size FROM chat_lines").fetchall(), [(9,)])
        db.close()

    @defer.inlineCallbacks
    def test_the_writer_stores_a_burst_in_order(self):
        writer = StoreWriter(self.store, reactor, bound=1000, batch=100, timeout=10)
        said = yield defer.gatherResults(
            [writer.write(line) for line in lines(*map(str, range(500)))]
        )
        self.assertEqual([line.id for line in said], list(range(1, 501)))
        self.assertEqual(
            [line.text for line in (yield self.store.since(0, 1000))], list(map(str, range(500)))
        )
        self.assertEqual((writer.status.state, writer.status.stored), (OK, 500))
        yield writer.stop()
