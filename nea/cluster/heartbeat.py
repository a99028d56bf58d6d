"""The Redis commands of membership: announce this instance, read the others, withdraw.

Each beat refreshes this instance's key, its names and the members index (all expire
after three beats, so a killed cluster leaves nothing behind for long), then reads every
indexed member's record in one MGET and prunes ids whose key has expired.
"""

from twisted.internet import defer

from nea.cluster.names import Namespace

#: A member is given up after this many heartbeat intervals without a beat.
TTL_BEATS = 3


def ttl_ms(interval: float) -> int:
    """How long, in milliseconds, what a beat refreshes lives without another beat."""
    return max(1, round(interval * TTL_BEATS * 1000))


@defer.inlineCallbacks
def beat(redis, ns: Namespace, instance: str, record: str, interval: float):
    """Announce ``record`` for ``instance``; return ``{id: record}`` of every live member."""
    ttl = ttl_ms(interval)
    # Sent back to back on one connection: Redis answers them in order.
    yield defer.gatherResults(
        [
            redis.set(ns.member(instance), record, pexpire=ttl),
            redis.zadd(ns.members, 0, instance),
            redis.execute_command("PEXPIRE", ns.members, ttl),
            redis.execute_command("PEXPIRE", ns.names(instance), ttl),
            redis.execute_command("PEXPIRE", ns.nicks(instance), ttl),
        ],
        consumeErrors=True,
    )
    names = yield redis.zrange(ns.members, 0, -1)
    if not names:
        return {}
    records = yield redis.mget([ns.member(name) for name in names])
    expired = [name for name, value in zip(names, records, strict=True) if value is None]
    if expired:
        yield redis.zrem(ns.members, *expired)
    return {name: value for name, value in zip(names, records, strict=True) if value is not None}


def withdraw(redis, ns: Namespace, instance: str):
    """Remove this instance's keys and index entry (the index vanishes with its last entry)."""
    return defer.gatherResults(
        [
            redis.delete(ns.member(instance), ns.names(instance), ns.nicks(instance)),
            redis.zrem(ns.members, instance),
        ],
        consumeErrors=True,
    )
