"""What the executor and its parts share: options, outcomes, the reporter interface, and the
markers and intents vodsync records around every create (see `engine/executor.py`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vodsync.desired.items import DesiredItem
from vodsync.engine.diff import Action, Change
from vodsync.state.store import Record

log = logging.getLogger("vodsync.apply")

# Items per batched call (the API's limits, or what keeps a call's answer small).
VIDEO_BATCH, URL_BATCH, URL_QUERY_BATCH, REGISTER_BATCH, UPDATE_BATCH = 20, 20, 10, 10, 20


def reference_id(name: str) -> str:
    """The ReferenceId of an item's video: stable, `[A-Za-z0-9_-]`, within 6-64 chars."""
    return "vs_" + hashlib.sha1(name.encode()).hexdigest()


def user_data(name: str) -> str:
    """Marker on everything vodsync creates, so `vodsync gc` can tell our media from others'."""
    return json.dumps({"Extend": {"vodsync": name}}, separators=(",", ":"))


@dataclass(frozen=True)
class ExecOptions:
    concurrency: int = 4
    wait: float = 300.0  # seconds to follow URL ingests and transcoding before returning
    poll_interval: float = 2.0
    upload_threads: int = 4
    part_size: int | None = None  # None: 8-32 MiB, by file size (cloud.upload.choose_part_size)
    multipart_threshold: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    name: str
    action: str
    ok: bool
    message: str
    pending: bool = False  # accepted, but VOD is still working on it (ingest, transcode)


@dataclass
class Result:
    outcomes: list[Outcome] = field(default_factory=list)
    uploaded_bytes: int = 0
    unsettled: list[str] = field(default_factory=list)  # still ingesting or transcoding when the run ended
    # time.monotonic() when the first counted upload began and the last one ended
    upload_span: tuple[float, float] | None = None

    @property
    def upload_seconds(self) -> float:
        return self.upload_span[1] - self.upload_span[0] if self.upload_span else 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failed


class Reporter:
    """Where progress and outcomes go; the CLI renders them (rich on a terminal, log lines otherwise)."""

    def upload_started(self, name: str, total: int) -> None: ...
    def upload_progress(self, name: str, done: int, total: int) -> None: ...
    def upload_finished(self, name: str) -> None: ...
    def outcome(self, outcome: Outcome) -> None: ...


def chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def iso_to_epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def meta_json(item: DesiredItem) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in item.metadata.items()}


def superseded_media(change: Change, rec: Record | None) -> tuple[str | None, str | None]:
    """The media a replace keeps serving until its successor is complete (and then deletes).

    A replace names it; a replace interrupted after its intent comes back as a resume, and the
    intent still names it: without that, the old media would never be deleted.
    """
    if rec is None:
        return None, None
    if change.action is Action.REPLACE and rec.remote_id:
        return rec.remote_id, rec.kind
    intent = rec.intent or {}
    if change.action is Action.RESUME and intent.get("supersedes"):
        return intent["supersedes"], intent.get("supersedes_kind") or intent.get("kind")
    return None, None


def cleanup_intent(old_id: str | None, old_kind: str | None, new_id: str) -> dict[str, Any] | None:
    if not old_id or old_id == new_id:
        return None
    return {"op": "cleanup", "supersedes": old_id, "kind": old_kind}


def origin_of(item: DesiredItem) -> str:
    """Drop-folder items are named `drop/<folder>/<digest>`; their records are never pruned."""
    if item.name.startswith("drop/"):
        return "drop:" + item.name.split("/")[1]
    return "manifest"
