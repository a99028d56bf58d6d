"""``--store`` values to stores: ``sqlite:PATH``, ``postgresql://...`` or ``none``."""

from nea.store.lines import HistoryStore, StoreError
from nea.store.memory import NoStore
from nea.store.postgresql import PostgreSQL
from nea.store.sql import TIMEOUT, SQLStore
from nea.store.sqlite import SQLite

#: In the git-ignored data directory, relative to where the daemon runs.
DEFAULT_STORE = "sqlite:var/history.db"

USAGE = "expected sqlite:PATH, postgresql://USER@HOST/DB or none"


def parse_store(value: str, reactor, timeout: float = TIMEOUT) -> HistoryStore:
    """The store ``value`` names, not yet opened; `StoreError` (one line) for anything else."""
    if value == "none":
        return NoStore()
    if value.startswith("sqlite:"):
        path = value[len("sqlite:") :]
        if not path or path.startswith("//"):
            raise StoreError(f"--store {value!r}: no file path ({USAGE})")
        return SQLStore(SQLite(path), reactor, timeout)
    if value.startswith(("postgresql://", "postgres://")):
        return SQLStore(PostgreSQL(value), reactor, timeout)
    raise StoreError(f"--store {value!r}: unknown store ({USAGE})")
