"""The values the state file holds: `Record` (one item as vodsync last left it) and `RecordStatus`.

A `Record` is frozen and plain: the store turns it into a row and back, the
engine compares it with a desired item. Its mappings are normalised on
construction (copied, lists turned into tuples) so that a record read back from
the file compares equal to the one that was written, whether the caller passed
tags as a list or a tuple.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from vodsync.vocab import Kind, Origin


class RecordStatus(StrEnum):
    CREATING = "creating"  # intent recorded before a create call; remote_id may be unknown
    UPLOADING = "uploading"  # remote media exists; local bytes not (fully) uploaded yet
    INGESTING = "ingesting"  # URL job submitted, not terminal yet (job_id set)
    PROCESSING = "processing"  # uploaded/registered; VOD still transcoding
    READY = "ready"  # converged
    FAILED = "failed"  # last attempt failed (last_error says why); will be retried
    DELETING = "deleting"  # delete intent recorded before the delete call


def freeze(value: Any) -> Any:
    """A copy of a JSON-like value with every list turned into a tuple (dicts are copied).

    JSON has only arrays, so a tuple written to the file comes back as a list;
    normalising both sides to tuples keeps `Record` equality stable across a
    round trip. Exact type checks first: this runs for every record read.
    """
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    if t is dict:
        return {k: freeze(v) for k, v in value.items()}
    if t is list or t is tuple:
        return tuple([freeze(v) for v in value])
    if isinstance(value, Mapping):
        return {k: freeze(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple([freeze(v) for v in value])
    return value


@dataclass(frozen=True)
class Record:
    """What vodsync last did for one item, keyed by the item's name."""

    name: str
    kind: Kind
    status: RecordStatus
    source: str  # local path / URL / FileURL
    remote_id: str | None = None  # VideoId / ImageId / MediaId
    reference_id: str | None = None  # ReferenceId used for videos
    job_id: str | None = None  # URL ingest job
    content_hash: str | None = None  # content digest (`vodsync.checksum`) of the local file last uploaded
    size: int | None = None
    mtime_ns: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)  # metadata last applied remotely
    options: Mapping[str, Any] = field(default_factory=dict)  # creation options used
    remote_status: str | None = None  # last seen VOD status (Uploading/Transcoding/Normal/SUCCESS/...)
    intent: Mapping[str, Any] | None = None  # what was about to happen, for crash recovery
    origin: Origin = Origin.manifest()  # set by whoever made the item; drop-folder items are never pruned
    protect: bool = False
    attempts: int = 0
    next_attempt_at: float | None = None
    last_result: str | None = None  # short human text: "created", "updated title", ...
    last_error: str | None = None
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        # object.__setattr__ because the dataclass is frozen; this runs only at construction.
        if type(self.status) is not RecordStatus:
            object.__setattr__(self, "status", RecordStatus(self.status))
        if type(self.kind) is not Kind:
            object.__setattr__(self, "kind", Kind(self.kind))
        if type(self.origin) is not Origin:
            object.__setattr__(self, "origin", Origin(self.origin))
        object.__setattr__(self, "metadata", freeze(self.metadata))
        object.__setattr__(self, "options", freeze(self.options))
        if self.intent is not None:
            object.__setattr__(self, "intent", freeze(self.intent))

    __hash__ = None  # type: ignore[assignment]  # mappings inside: equality, not hashing

    def replace(self, **changes: Any) -> Record:
        """A copy with `changes` applied (`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)
