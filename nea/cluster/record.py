"""The heartbeat record: what an instance announces to the others, and its versions.

A record is a small JSON object, separate from the status document so that a
status key can be renamed without breaking a cluster that runs two versions.
Version 2::

    {"v": 2, "run": "4f3a...", "version": "0.1.0", "state": "serving",
     "connections": 12, "relay_weight": 10, "pending": 0, "zero_state": false,
     "services": {"people": 2}}

The version also stands for the messages instances exchange
(`nea.cluster.envelope`): version 2 has the compact relay lines, which version 1
(the same record, every message JSON) does not read. Readers ignore fields they
do not know, so adding one keeps the version; a change another reader would
misread, in the record or in the messages, gets a new version number. ``v`` and
``run`` keep their meaning in every version, so a member that announces any
other version (an older one, or a record with no ``v``: the form before records
had versions) is still tracked (joined, restarted, gone) but never drawn as a
relay target, and shows as ``incompatible`` in status.
"""

import json
from typing import Any

import attrs

from nea.core.snapshot import MemberFigures

VERSION = 2

_JSON = json.JSONEncoder(separators=(",", ":"))


@attrs.frozen
class Announcement:
    run: str
    figures: MemberFigures
    #: False for a record of another version than this instance's.
    compatible: bool = True
    #: The record's version.
    record_version: int = VERSION


def encode(run: str, figures: MemberFigures) -> str:
    fields = figures.as_json()
    del fields["instance"]  # the key it is stored under names it
    return _JSON.encode({"v": VERSION, "run": run, **fields})


def decode(instance: str, data: str) -> Announcement:
    """The record stored for ``instance``; ValueError if it is malformed."""
    try:
        record = json.loads(data)
        if not isinstance(record, dict):
            raise TypeError("not an object")
        run = record["run"]
        if not isinstance(run, str):
            raise TypeError("run must be a string")
        version = record.get("v", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise TypeError("v must be a non-negative integer")
        if version != VERSION:
            return Announcement(run, _unknown(instance, record), False, version)
        return Announcement(
            run,
            MemberFigures(
                instance=instance,
                version=_typed(record, "version", str),
                state=_typed(record, "state", str),
                connections=_count(record, "connections"),
                relay_weight=_count(record, "relay_weight"),
                pending=_count(record, "pending"),
                zero_state=_typed(record, "zero_state", bool),
                services=_services(record.get("services", {})),
            ),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed heartbeat record {data!r}: {e}") from None


def _unknown(instance: str, record: dict[str, Any]) -> MemberFigures:
    """Another version's record: nothing in it is read but the nea version, if it is a
    string."""
    version = record.get("version")
    return MemberFigures(
        instance=instance,
        version=version if isinstance(version, str) else "unknown",
        state="incompatible",
        connections=0,
        relay_weight=0,
        pending=0,
        zero_state=True,
    )


def _services(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise TypeError("services must be an object")
    return {name: _count(value, name) for name in value}


def _typed(fields: dict[str, Any], name: str, kind: type):
    value = fields[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError(f"{name} must be {kind.__name__}")
    return value


def _count(fields: dict[str, Any], name: str) -> int:
    value = _typed(fields, name, int)
    if value < 0:
        raise TypeError(f"{name} must not be negative")
    return value
