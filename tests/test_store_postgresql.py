"""The PostgreSQL store on a real server started by the tests (as ``nobody`` when run as root).

Two stores on one database stand for two instances of a cluster. Waits that
depend on the server (a backend blocked on a lock, the writer recovering) are
polled with a deadline; what is asserted never depends on how fast it happens.
"""

import os

import psycopg
from twisted.internet import defer, reactor
from twisted.trial import unittest

from nea.store.lines import StoreError
from nea.store.postgresql import WRITE_LOCK, PostgreSQL
from nea.store.sql import SCHEMA_VERSION, SQLStore
from nea.store.trimmer import Trimmer
from nea.store.writer import DEGRADED, OK, StoreWriter
from tests import infra, support
from tests.store_contract import StoreContract, lines


class PostgreSQLTestCase(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.server = yield infra.postgresql_server(self)
        self.store = yield self.opened()

    @defer.inlineCallbacks
    def opened(self, timeout: float = 3 * support.WAIT):
        # Generous timeouts: here a write waits on purpose, and the machine is shared.
        store = SQLStore(PostgreSQL(self.server.url, statement_timeout=timeout), reactor, timeout)
        self.addCleanup(store.close)
        yield store.open()
        return store

    def sql(self, statement: str, *params):
        """Run ``statement`` on a connection of the test's own; its rows, if any."""
        with psycopg.connect(self.server.url, autocommit=True, connect_timeout=5) as db:
            cursor = db.execute(statement, params)
            return cursor.fetchall() if cursor.description else None

    def locked(self) -> psycopg.Connection:
        """A connection in a transaction that holds the append lock, as a writer between
        taking its ids and committing would; closed at test end."""
        db = psycopg.connect(self.server.url, connect_timeout=5)
        self.addCleanup(db.close)
        db.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        return db

    def waiting_on_the_lock(self) -> bool:
        return bool(
            self.sql(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%%pg_advisory_xact_lock%%'"
            )
        )


class PostgreSQLContractTests(StoreContract, PostgreSQLTestCase):
    pass


class PostgreSQLSchemaTests(PostgreSQLTestCase):
    def test_open_creates_the_versioned_schema(self):
        self.assertEqual(self.sql("SELECT version FROM nea_schema"), [(SCHEMA_VERSION,)])
        columns = self.sql(
            "SELECT column_name, data_type, is_identity FROM"
            " information_schema.columns WHERE table_name = 'chat_lines'"
            " ORDER BY ordinal_position"
        )
        self.assertEqual(columns[0], ("id", "bigint", "YES"))
        self.assertEqual(
            [name for name, _, _ in columns], ["id", "kind", "name", "body", "said_at", "size"]
        )

    @defer.inlineCallbacks
    def test_instances_starting_at_once_migrate_once(self):
        self.sql("DROP TABLE chat_lines, nea_schema")
        stores = [SQLStore(PostgreSQL(self.server.url), reactor) for _ in range(3)]
        for store in stores:
            self.addCleanup(store.close)
        yield defer.gatherResults([store.open() for store in stores])
        self.assertEqual(self.sql("SELECT version FROM nea_schema"), [(SCHEMA_VERSION,)])

    @defer.inlineCallbacks
    def test_version_1_is_migrated_and_its_sizes_counted(self):
        self.sql("DROP TABLE chat_lines, nea_schema")
        for statement in PostgreSQL.migrations[1]:
            self.sql(statement)
        self.sql("CREATE TABLE nea_schema (version INTEGER NOT NULL)")
        self.sql("INSERT INTO nea_schema VALUES (1)")
        self.sql(
            "INSERT INTO chat_lines (kind, name, body, said_at)"
            " VALUES ('chat', 'ann', 'héllo', now())"
        )
        yield self.opened()
        self.assertEqual(self.sql("SELECT version FROM nea_schema"), [(SCHEMA_VERSION,)])
        self.assertEqual(self.sql("SELECT size FROM chat_lines"), [(9,)])

    @defer.inlineCallbacks
    def test_a_newer_schema_is_refused_in_one_line(self):
        self.sql("UPDATE nea_schema SET version = %s", SCHEMA_VERSION + 1)
        store = SQLStore(PostgreSQL(self.server.url), reactor)
        self.addCleanup(store.close)
        failure = yield self.assertFailure(store.open(), StoreError)
        self.assertIn(f"version {SCHEMA_VERSION + 1}, newer than", str(failure))
        self.assertNotIn("\n", str(failure))


class PostgreSQLSpaceTests(PostgreSQLTestCase):
    @defer.inlineCallbacks
    def test_history_bounded_in_bytes_reuses_its_space(self):
        """Round after round of 1.2 MB said and trimmed to 100 kB: the table does not grow."""
        sizes = []
        trimmer = Trimmer(self.store, None, reactor, keep_bytes=100_000)
        for _ in range(4):
            for _ in range(3):
                yield self.store.append(lines(*(os.urandom(2000).hex() for _ in range(100))))
            yield trimmer.trim()
            sizes.append(self.sql("SELECT pg_total_relation_size('chat_lines')")[0][0])
        self.assertEqual(trimmer.failures, 0)
        kept = self.sql("SELECT sum(size) FROM chat_lines")[0][0]
        self.assertLessEqual(kept, 100_000)
        self.assertLess(sizes[-1], sizes[0] * 1.5)  # reused, not grown by 1.2 MB a round


class PostgreSQLClusterTests(PostgreSQLTestCase):
    @defer.inlineCallbacks
    def test_two_instances_get_distinct_ids_ordered_as_each_appended(self):
        other = yield self.opened()
        appends = []
        for i in range(20):
            for name, store in (("a", self.store), ("b", other)):
                appends.append(store.append(lines(f"{name}{i}.1", f"{name}{i}.2")))
        stored = [line for batch in (yield defer.gatherResults(appends)) for line in batch]
        ids = [line.id for line in stored]
        self.assertEqual(len(set(ids)), 80)
        for name in "ab":
            own = [line.id for line in stored if line.text.startswith(name)]
            self.assertEqual(own, sorted(own))  # each instance's lines in the order it said them
        for reader in (self.store, other):
            everything = yield reader.since(0, 1000)
            self.assertEqual(everything, sorted(stored, key=lambda line: line.id))

    @defer.inlineCallbacks
    def test_a_higher_id_is_never_visible_before_a_lower_one(self):
        holder = self.locked()  # another instance, between taking its id and committing
        [[held_id]] = holder.execute(
            "INSERT INTO chat_lines (kind, name, body, said_at) VALUES"
            " ('chat', 'x', 'first', now()) RETURNING id"
        ).fetchall()
        appended = self.store.append(lines("second"))
        yield support.settle(self.waiting_on_the_lock)
        self.assertFalse(appended.called)
        self.assertEqual((yield self.store.since(0, 10)), [])  # nothing visible yet
        holder.commit()
        [second] = yield appended
        self.assertGreater(second.id, held_id)
        self.assertEqual(
            [line.id for line in (yield self.store.since(0, 10))], [held_id, second.id]
        )


class PostgreSQLDegradedTests(PostgreSQLTestCase):
    def writer(self, **kwargs) -> StoreWriter:
        options = dict(
            bound=1000, batch=100, timeout=3 * support.WAIT, retry_first=0.05, retry_max=0.2
        )
        writer = StoreWriter(self.store, reactor, **{**options, **kwargs})
        self.addCleanup(writer.stop)
        return writer

    @defer.inlineCallbacks
    def test_the_database_stopped_mid_write_degrades_then_recovers_when_restarted(self):
        writer = self.writer()
        [before] = yield defer.gatherResults([writer.write(lines("before")[0])])
        self.locked()
        said = [writer.write(line) for line in lines("mid-1", "mid-2", "mid-3")]
        yield support.settle(self.waiting_on_the_lock)  # mid-1 is in the database's hands
        yield self.server.stop(immediate=True)
        mid = yield defer.gatherResults(said)
        self.assertEqual([line.text for line in mid], ["mid-1", "mid-2", "mid-3"])
        self.assertEqual([line.id for line in mid], [None, None, None])
        status = writer.status
        self.assertEqual((status.state, status.unsaved, status.queued), (DEGRADED, 3, 0))
        self.assertNotIn("\n", status.error)
        down = yield writer.write(lines("while down")[0])  # at once, no wait for a timeout
        self.assertIsNone(down.id)
        self.assertEqual(writer.status.unsaved, 4)

        yield self.server.start()
        yield support.settle(lambda: writer.status.state == OK, timeout=3 * support.WAIT)
        after = yield writer.write(lines("after")[0])
        self.assertGreater(after.id, before.id)
        history = yield self.store.since(0, 10)
        self.assertEqual([line.text for line in history], ["before", "after"])
        self.assertIsNone(writer.status.error)

    @defer.inlineCallbacks
    def test_a_slow_database_is_waited_for_and_nothing_is_given_away(self):
        writer = self.writer(bound=10, batch=4)
        holder = self.locked()
        said = [writer.write(line) for line in lines(*map(str, range(11)))]
        yield support.settle(self.waiting_on_the_lock)
        status = writer.status
        self.assertEqual((status.state, status.queued, status.pushing_back), (OK, 11, True))
        self.assertEqual([d.called for d in said], [False] * 11)
        caught_up = writer.caught_up()
        holder.commit()  # the database answers: every line is stored, in order
        stored = yield defer.gatherResults(said)
        yield caught_up
        self.assertEqual([line.text for line in stored], list(map(str, range(11))))
        self.assertEqual([line.id for line in stored], sorted({line.id for line in stored}))
        self.assertEqual((writer.status.unsaved, writer.status.pushing_back), (0, False))
