"""The SQLite store on real files in a temporary directory."""

import sqlite3
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.trial import unittest

from nea.store.lines import StoreError
from nea.store.sql import SCHEMA_VERSION, SQLStore
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

    @defer.inlineCallbacks
    def test_the_writer_stores_a_burst_in_order(self):
        writer = StoreWriter(self.store, reactor, bound=1000, batch=100, timeout=10)
        said = yield defer.gatherResults([writer.write(line) for line in
                                          lines(*map(str, range(500)))])
        self.assertEqual([line.id for line in said], list(range(1, 501)))
        self.assertEqual([line.text for line in (yield self.store.since(0, 1000))],
                         list(map(str, range(500))))
        self.assertEqual((writer.status.state, writer.status.stored), (OK, 500))
        yield writer.stop()
