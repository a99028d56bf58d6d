"""History kept in a list: for tests of the core, and for benchmarks' baseline."""

from collections.abc import Sequence

from twisted.internet import defer

from nea.store.lines import Line, StoredLine, check_count, octets


class MemoryStore:
    """A `HistoryStore` in this process's memory: ids from 1, lost when the process ends."""

    name = "memory"
    enabled = True
    cluster_safe = False

    def __init__(self) -> None:
        self.lines: list[StoredLine] = []
        self._last_id = 0

    def open(self):
        return defer.succeed(None)

    def append(self, lines: Sequence[Line]):
        return defer.succeed(self.keep(lines))

    def keep(self, lines: Sequence[Line]) -> list[StoredLine]:
        """`append`, at once."""
        stored = []
        for line in lines:
            self._last_id += 1
            stored.append(line.stored(self._last_id))
        self.lines.extend(stored)
        return stored

    def since(self, last_id: int, limit: int):
        check_count("limit", limit)
        check_count("last_id", last_id)
        return defer.succeed([line for line in self.lines if line.id > last_id][:limit])

    def latest(self, count: int):
        check_count("count", count)
        return defer.succeed(self.lines[len(self.lines) - count :] if count else [])

    def probe(self):
        return defer.succeed(None)

    def trim(self, keep: int | None, most: int, keep_bytes: int | None = None):
        old = 0 if keep is None else max(len(self.lines) - check_count("keep", keep), 0)
        if keep_bytes is not None:
            check_count("keep_bytes", keep_bytes)
            newer = 0
            for at in range(len(self.lines) - 1, old - 1, -1):
                newer += octets(self.lines[at])
                if newer > keep_bytes:
                    old = at + 1
                    break
        gone = min(old, check_count("most", most))
        del self.lines[:gone]
        return defer.succeed(gone)

    def compact(self):
        return defer.succeed(None)

    def close(self):
        return defer.succeed(None)


class NoStore:
    """``--store none``: history is off. Nothing is kept; the writer passes lines through."""

    name = "none"
    enabled = False
    cluster_safe = True  # nothing to share

    def open(self):
        return defer.succeed(None)

    def append(self, lines: Sequence[Line]):
        return defer.fail(ValueError("the none store keeps no lines"))

    def since(self, last_id: int, limit: int):
        return defer.succeed([])

    def latest(self, count: int):
        return defer.succeed([])

    def probe(self):
        return defer.succeed(None)

    def trim(self, keep: int | None, most: int, keep_bytes: int | None = None):
        return defer.succeed(0)

    def compact(self):
        return defer.succeed(None)

    def close(self):
        return defer.succeed(None)
