"""How a `Record` is written to a row and read back: one codec for every state backend.

Both stores (SQLite, `store.py`; PostgreSQL, `postgres.py`) hold the same columns in the same
order as `Record`'s fields, with the JSON columns (metadata, options, intent) as text, so a row
from either maps onto a record through `decode_rows` and a record onto a row through `encode_row`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from vodsync.errors import StateError
from vodsync.state.records import Intent, Record, RecordStatus, freeze
from vodsync.vocab import Kind, Origin

__all__ = ["COLUMNS", "decode_rows", "encode_row"]

# Column order == Record field order, so a row maps onto Record(*row) after decoding.
COLUMNS = (
    "name", "kind", "status", "source", "remote_id", "reference_id", "job_id", "content_hash",
    "size", "mtime_ns", "metadata", "options", "remote_status", "intent", "origin", "protect",
    "attempts", "next_attempt_at", "last_result", "last_error", "updated_at",
)  # fmt: skip


def _dumps(value: Any) -> str:
    # sort_keys: a stable text makes the file diffable and the tests deterministic.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_row(record: Record, updated_at: float) -> tuple[Any, ...]:
    if not isinstance(record, Record):
        raise TypeError(f"expected a Record, got {type(record).__name__}")
    try:
        metadata = _dumps(record.metadata)
        options = _dumps(record.options)
        intent = None if record.intent is None else _dumps(record.intent.to_json())
    except (TypeError, ValueError) as exc:
        raise StateError(f"record {record.name!r} holds a value that is not JSON: {exc}") from exc
    return (
        record.name, str(record.kind), str(record.status), record.source, record.remote_id,
        record.reference_id, record.job_id, record.content_hash, record.size, record.mtime_ns,
        metadata, options, record.remote_status, intent, str(record.origin), int(record.protect),
        record.attempts, record.next_attempt_at, record.last_result, record.last_error, updated_at,
    )  # fmt: skip


_STATUSES = {s.value: s for s in RecordStatus}
_KINDS = {k.value: k for k in Kind}
_ORIGINS = {str(Origin.manifest()): Origin.manifest()}


def _origin(name: str, text: str, seen: dict[str, Origin]) -> Origin:
    """The `Origin` a row's origin column holds (one value per text, shared across rows)."""
    try:
        return seen.setdefault(text, Origin(text))
    except ValueError:
        raise StateError(f"record {name!r} has an unreadable origin {text!r}") from None

_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Record))
assert _FIELD_NAMES == COLUMNS, "records columns must follow Record's field order"
_decode_json = json.JSONDecoder().decode


def _thaw_all(texts: list[str], names: list[str], column: str) -> list[Any]:
    """Decode many JSON column values at once, lists turned into tuples (see records.freeze).

    One `loads` over "[a,b,...]" costs a fraction of 100,000 separate calls,
    which dominate `records()` otherwise. Each value must be a JSON object (or null):
    anything else is a `StateError` naming the record and the column.
    """
    values = _decode_json("[" + ",".join(texts) + "]")
    # Equal values are shared: a library repeats its tag lists and option sets (and "{}")
    # across thousands of records; one object each saves ~25 MiB per 100,000 records.
    share: dict[Any, Any] = {}
    empty: dict[str, Any] = {}
    for i, value in enumerate(values):
        if value is None:
            continue
        if type(value) is not dict:
            raise StateError(
                f"record {names[i]!r} has an unreadable {column} column: expected a JSON object, "
                f"got {type(value).__name__} (edited by hand, or written by another program?)"
            )
        if not value:
            values[i] = empty
            continue
        for k, v in value.items():
            if type(v) is list or type(v) is dict:
                v = freeze(v)
                if type(v) is tuple:
                    try:
                        v = share.setdefault(v, v)
                    except TypeError:  # a tuple holding a dict: not hashable, not shared
                        pass
                value[k] = v
    return values


def decode_rows(rows: list[tuple[Any, ...]]) -> list[Record]:
    """Records from rows, built without re-running __post_init__ (the values are already normal).

    This is the hot path of a store's `records()` (100,000 rows); going through __init__
    and freeze() again roughly doubles its cost.
    """
    try:
        names = [row[0] for row in rows]
        metadatas = _thaw_all([row[10] for row in rows], names, "metadata")
        optionses = _thaw_all([row[11] for row in rows], names, "options")
        intents = _thaw_all(["null" if row[13] is None else row[13] for row in rows], names, "intent")
    except ValueError as exc:
        raise StateError(f"the state file has an unreadable JSON column: {exc}") from None
    statuses, kinds, origins, from_json = _STATUSES, _KINDS, dict(_ORIGINS), Intent.from_json
    new, fields = object.__new__, _FIELD_NAMES
    # sqlite3 returns a new str for every cell: share the few values these columns repeat
    # ("video", "Normal", "manifest", "created"), ~22 MiB over 100,000 records.
    share = {}.setdefault
    out = []
    for row, metadata, options, intent in zip(rows, metadatas, optionses, intents, strict=True):
        (name, kind, status, source, remote_id, reference_id, job_id, content_hash, size, mtime_ns,
         _, _, remote_status, _, origin, protect, attempts, next_attempt_at, last_result,
         last_error, updated_at) = row  # fmt: skip
        remote_status, last_result = share(remote_status, remote_status), share(last_result, last_result)
        try:
            status = statuses[status]
            kind = kinds[kind]
        except KeyError:
            column, value = ("status", status) if type(status) is str else ("kind", kind)
            raise StateError(
                f"record {name!r} has unknown {column} {value!r} (written by a newer vodsync?)"
            ) from None
        origin = origins.get(origin) or _origin(name, origin, origins)
        record = new(Record)
        # Filled key by key, in field order, through the instance's own dict (bypassing the
        # frozen dataclass's __setattr__): CPython then keeps the values in a table whose keys all
        # records share, ~200 bytes a record less than a dict of their own (`__dict__ = {...}`,
        # or update() from a dict, which copies that dict's keys): ~190 MiB over 1,000,000 records.
        vars(record).update(zip(fields, (
            name, kind, status, source, remote_id, reference_id, job_id, content_hash, size, mtime_ns,
            metadata, options, remote_status, None if intent is None else from_json(intent), origin,
            bool(protect), attempts, next_attempt_at, last_result, last_error, updated_at,
        ), strict=True))  # fmt: skip
        out.append(record)
    return out
