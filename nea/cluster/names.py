"""Where a cluster lives in Redis: the address to connect to, and its key/channel names.

Everything a cluster writes is under its name (``--cluster-name``, default ``nea``),
so several clusters (or test runs) can share one Redis without meeting:

- ``NAME:member:ID`` (string, ``SET PX`` = 3 heartbeats): the heartbeat of instance
  ID, its heartbeat record (`nea.cluster.record`);
- ``NAME:members`` (sorted set, ``PEXPIRE`` = 3 heartbeats): the index of member ids,
  so discovery never scans the keyspace; ids whose heartbeat key has expired are
  pruned from it by whoever notices;
- ``NAME:names:ID`` (hash, ``PEXPIRE`` = 3 heartbeats, refreshed by each beat): the
  client names registered on instance ID, each with when it was registered; it
  dies with the instance's heartbeat, so a dead instance's names vanish with it;
- ``NAME:nicks:ID`` (hash, expiring like the names hash): the chat nicks that
  clients identified by a token hold on instance ID, each with its identity;
- channel ``NAME:cluster``: chat, operator broadcasts and leave notices for everyone;
- channel ``NAME:to:ID``: deliveries, acks and re-forwards, and requests' offers,
  answers and refusals, addressed to instance ID.

Pub/sub channels are not per database in Redis: two clusters on one Redis server
need different names even when they use different database numbers.
"""

from urllib.parse import urlsplit

import attrs

DEFAULT_PORT = 6379


@attrs.frozen
class RedisAddress:
    host: str
    port: int = DEFAULT_PORT
    db: int = 0

    @classmethod
    def parse(cls, url: str) -> "RedisAddress":
        """``redis://host:port/db`` (port and db optional); anything else is a ValueError."""
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError(f"expected redis://host[:port][/db], got {url!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(f"only redis://host[:port][/db] is supported, got {url!r}")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"database must be a number, got {path!r}")
        return cls(parts.hostname, parts.port or DEFAULT_PORT, int(path or 0))

    def __str__(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


@attrs.frozen
class Namespace:
    name: str

    @property
    def members(self) -> str:
        return f"{self.name}:members"

    @property
    def cluster(self) -> str:
        return f"{self.name}:cluster"

    def member(self, instance: str) -> str:
        return f"{self.name}:member:{instance}"

    def names(self, instance: str) -> str:
        return f"{self.name}:names:{instance}"

    def nicks(self, instance: str) -> str:
        return f"{self.name}:nicks:{instance}"

    def inbox(self, instance: str) -> str:
        return f"{self.name}:to:{instance}"
