"""The values the state file holds: `Record` (one item as vodsync last left it), its `RecordStatus`,
and the `Intent` it carries while a create, an upload, an ingest or a cleanup is under way.

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


class Op(StrEnum):
    """What an intent says was about to happen (`Intent.op`)."""

    CREATE = "create"  # a create call is about to be made: recovery finds what it made
    UPLOAD = "upload"  # the media exists; its bytes are being uploaded
    INGEST = "ingest"  # a URL job was submitted; `previous_*` is what a failed job puts back
    CLEANUP = "cleanup"  # the successor is complete: the superseded media is to be deleted


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
class MediaRef:
    """One media at VOD: its ID, and its kind where known (older intents did not record it)."""

    media_id: str
    kind: Kind | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and type(self.kind) is not Kind:
            object.__setattr__(self, "kind", Kind(self.kind))


# The JSON keys an intent is stored under, and the older spellings still read (never written).
_INTENT_KEYS = frozenset({"op", "at", "title", "supersedes", "supersedes_kind", "url", "metadata", "options",
                          "session", "previous_source", "previous_metadata", "kind"})
_OPS = {o.value: o for o in Op}


@dataclass(frozen=True)
class Intent:
    """What was about to happen to an item when the state was last written (crash recovery).

    Written before the call it announces (`engine/executor.py`); its JSON form is what the state
    file holds. `from_json` reads every form vodsync has written: the kind of the superseded
    media was stored as `supersedes_kind`, and by cleanups as `kind`. Keys this version does not
    know are kept in `extra` and written back unchanged, and so is an unknown `op`.
    """

    op: Op | str
    at: float | None = None  # when it was written (the service's clock is compared with it)
    title: str | None = None  # the title the create was made with (orphans are found by it)
    supersedes: MediaRef | None = None  # the media the item had, deleted once its successor is complete
    url: str | None = None  # a URL ingest's URL, as recorded (credentials redacted)
    metadata: Mapping[str, Any] | None = None  # what a URL job was submitted with
    options: Mapping[str, Any] | None = None
    session: str | None = None  # the SessionId a URL job was submitted with
    previous_source: str | None = None  # what the record said before a URL job: a failed job puts it back
    previous_metadata: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("metadata", "options", "previous_metadata", "extra"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, freeze(value))

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Intent:
        op = raw.get("op")
        old = raw.get("supersedes")
        return cls(
            op=_OPS.get(op, op) if isinstance(op, str) else str(op),
            at=raw.get("at"), title=raw.get("title"),
            supersedes=MediaRef(old, raw.get("supersedes_kind") or raw.get("kind")) if old else None,
            url=raw.get("url"), metadata=raw.get("metadata"), options=raw.get("options"), session=raw.get("session"),
            previous_source=raw.get("previous_source"), previous_metadata=raw.get("previous_metadata"),
            extra={k: v for k, v in raw.items() if k not in _INTENT_KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": str(self.op), **self.extra}
        fields = {
            "at": self.at, "title": self.title, "url": self.url, "metadata": self.metadata,
            "options": self.options, "session": self.session, "previous_source": self.previous_source,
            "previous_metadata": self.previous_metadata,
        }
        out.update((k, v) for k, v in fields.items() if v is not None)
        if self.supersedes is not None:
            out["supersedes"] = self.supersedes.media_id
            if self.supersedes.kind is not None:
                out["supersedes_kind"] = str(self.supersedes.kind)
        return out

    def replace(self, **changes: Any) -> Intent:
        return dataclasses.replace(self, **changes)


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
    intent: Intent | None = None  # what was about to happen, for crash recovery
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
        if self.intent is not None and type(self.intent) is not Intent:
            object.__setattr__(self, "intent", Intent.from_json(self.intent))

    __hash__ = None  # type: ignore[assignment]  # mappings inside: equality, not hashing

    def replace(self, **changes: Any) -> Record:
        """A copy with `changes` applied (`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    # Named transitions: each returns the record as the step it names leaves it. The executor
    # writes the result before (an intent) or right after (an ID) the call it concerns.

    def intending(self, intent: Intent, **changes: Any) -> Record:
        """A create is about to be made (`creating`): written before the call."""
        return self.replace(status=RecordStatus.CREATING, intent=intent, **changes)

    def created(self, remote_id: str, intent: Intent | None = None, **changes: Any) -> Record:
        """The media exists and waits for its bytes (`uploading`)."""
        return self.replace(status=RecordStatus.UPLOADING, remote_id=remote_id, intent=intent, **changes)

    def uploaded(self, status: RecordStatus, **changes: Any) -> Record:
        """Its bytes are in; VOD transcodes a video (`processing`), anything else is `ready`."""
        return self._succeeded(status=status, **changes)

    def ingesting(self, job_id: str, intent: Intent | None, **changes: Any) -> Record:
        """A URL job was submitted (or found again) and is followed until it settles."""
        return self.replace(status=RecordStatus.INGESTING, job_id=job_id, intent=intent, **changes)

    def delivered(self, remote_id: str, **changes: Any) -> Record:
        """An ingest or a registration delivered its media: VOD processes it now (`processing`)."""
        return self._succeeded(status=RecordStatus.PROCESSING, remote_id=remote_id, **changes)

    def ready(self, remote_status: str, **changes: Any) -> Record:
        """VOD finished with it (or stopped short of a failure, as a review does): `ready`."""
        return self.replace(status=RecordStatus.READY, remote_status=remote_status, **changes)

    def lost(self, **changes: Any) -> Record:
        """Its media is gone (deleted remotely, or on purpose before a new create): created afresh
        by the next plan. Not a failed attempt."""
        return self.replace(status=RecordStatus.FAILED, remote_id=None, **changes)

    def failed(self, why: str, *, status: RecordStatus | None = RecordStatus.FAILED, **changes: Any) -> Record:
        """An attempt failed (`why` says how): the only place `attempts` grows. `status=None`
        keeps the status (a create whose intent recovery must still settle, a failed update)."""
        why = why[:500]
        return self.replace(
            status=self.status if status is None else status, last_error=why,
            last_result=f"failed: {why}"[:500], attempts=self.attempts + 1, **changes,
        )

    def _succeeded(self, **changes: Any) -> Record:
        return self.replace(last_error=None, attempts=0, next_attempt_at=None, **changes)
