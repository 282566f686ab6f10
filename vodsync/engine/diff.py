"""Desired items x recorded state -> changes. Pure: no I/O, no clock.

The one question answered here is *what differs and why*. Whether a change is
carried out (prune, delete limits) is the plan's policy, and how it is carried
out is the executor's business.

Content identity: a local file is unchanged while its size and mtime equal the
recorded ones; only when they differ does the caller hash it (`needs_hash`)
and pass the digest in `hashes`, so a no-op plan over a large library reads no
file bytes at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vodsync.desired.items import UPDATABLE_FIELDS, DesiredItem, Kind
from vodsync.logs import redact_url_userinfo
from vodsync.state.store import Record, RecordStatus


class Action(StrEnum):
    CREATE = "create"  # new item, or its remote media is gone
    UPDATE = "update"  # metadata only, just the fields that changed
    REPLACE = "replace"  # new content (or source, or kind) for an existing item
    DELETE = "delete"  # item gone from the manifests (carried out only with --prune)
    RESUME = "resume"  # finish what an interrupted or failed run started
    FOLLOW = "follow"  # an asynchronous URL ingest is still running
    TOUCH = "touch"  # bookkeeping only (new mtime, same bytes; protect flag): no API call
    IMPORT = "import"  # adopt existing media (`import_id:`): read it and record it, no write call
    MOVE = "move"  # a renamed item (`moved:`): its record is re-keyed, the media kept (`engine/moves.py`)


# The content identity `vodsync import` records when the imported media's size differs from the
# local file's (the service exposes no checksum to compare): planned as a replace, never silent.
IMPORTED_DIFFERS = "imported-differs:"

# Actions that change nothing remotely; they never count as "changes" in a plan.
BOOKKEEPING = frozenset({Action.TOUCH})


@dataclass(frozen=True)
class Change:
    action: Action
    name: str
    kind: Kind
    reason: str
    fields: tuple[str, ...] = ()  # metadata fields to write (update, replace, create after drift)
    item: DesiredItem | None = None
    record: Record | None = None
    upload_bytes: int = 0
    content_hash: str | None = None  # digest of the desired local content, when known
    uncleared: tuple[str, ...] = ()  # fields the manifest empties, which the API cannot clear
    # The values `fields` were compared against: the record's last applied metadata, or with --refresh
    # the remote media's. What a plan shows as each field's "before".
    current: Mapping[str, Any] | None = None

    def __str__(self) -> str:
        if self.action is Action.UPDATE:
            return f"update({self.name}: {', '.join(self.fields)})"
        return f"{self.action}({self.name}: {self.kind})"


def normalize(field: str, value: Any) -> Any:
    """Compare-ready form of a metadata value: empty means unset; tag order is not meaningful."""
    if value is None or value == "" or value == () or value == []:
        return None
    if field == "tags":
        if isinstance(value, str):
            value = [t for t in (s.strip() for s in value.split(",")) if t]
        return tuple(sorted(value)) or None
    if field == "cate_id":
        try:
            return int(value)
        except (TypeError, ValueError):
            return value
    return value


def changed_fields(item: DesiredItem, current: Mapping[str, Any]) -> tuple[str, ...]:
    """Updatable fields the manifest sets whose value differs from `current`."""
    return tuple(
        f
        for f in UPDATABLE_FIELDS[item.kind]
        if f in item.metadata and normalize(f, item.metadata[f]) != normalize(f, current.get(f))
    )


def needs_hash(item: DesiredItem, record: Record | None) -> bool:
    """True when a local file's size, mtime or path moved since it was recorded."""
    if item.local is None or record is None or record.content_hash is None:
        return False
    return (item.local.path, item.local.total_size, item.local.newest_mtime_ns) != (
        record.source,
        record.size,
        record.mtime_ns,
    )


_UNFINISHED = {
    RecordStatus.CREATING: "interrupted before the media was created",
    RecordStatus.UPLOADING: "interrupted upload",
    RecordStatus.DELETING: "interrupted delete",
}


# Video statuses that end following (vod-api.md §00, §4). Review is the account owner's to do in
# the console: the video exists and stays as it is until then.
IN_REVIEW = {"Checking": "the video awaits review in the VOD console"}
FAILED_VIDEO = {
    "Blocked": "the review blocked the video",
    "TranscodeFail": "transcoding failed",
    "ProduceFail": "producing the video failed",
    "UploadFail": "VOD could not take in the uploaded file",
}

# VOD statuses (of media, and of URL jobs) that make a failed record's failure VOD's own.
_REMOTE_FAILURES = frozenset(FAILED_VIDEO) | {"DOWNLOAD_FAIL", "UPLOAD_FAIL"}


def _diff_one(
    item: DesiredItem,
    record: Record | None,
    hashes: Mapping[str, str],
    remote: Mapping[str, Mapping[str, Any] | None] | None,
) -> Change | None:
    size = item.local.total_size if item.local else 0
    if record is None:
        if item.import_id:
            return Change(Action.IMPORT, item.name, item.kind, f"import {item.import_id}", item=item)
        return Change(Action.CREATE, item.name, item.kind, "new item", item=item, upload_bytes=size)
    unsettled = _unsettled(item, record, size)
    if unsettled is not None:
        return unsettled
    if remote is not None and item.name in remote and remote[item.name] is None:
        return Change(
            Action.CREATE, item.name, item.kind, "deleted remotely", item=item, record=record, upload_bytes=size
        )
    replace_reason, content_hash = _content_change(item, record, hashes, size)

    current = record.metadata
    drift = ""
    if remote is not None and remote.get(item.name) is not None:
        current = remote[item.name] or {}
        drift = " (changed remotely)"
    fields = changed_fields(item, current)
    # The Update* calls change what they are given and document no way to empty a field
    # (sending "" is undocumented): a field the manifest empties is left as it is, and said so.
    uncleared = tuple(f for f in fields if normalize(f, item.metadata[f]) is None)
    fields = tuple(f for f in fields if f not in uncleared)

    if replace_reason:
        return Change(
            Action.REPLACE, item.name, item.kind, replace_reason, fields=fields, item=item, record=record,
            upload_bytes=size, content_hash=content_hash, uncleared=uncleared, current=current,
        )
    if fields:
        return Change(
            Action.UPDATE, item.name, item.kind, f"{', '.join(fields)} changed{drift}", fields=fields,
            item=item, record=record, uncleared=uncleared, current=current,
        )
    if record.status is RecordStatus.FAILED and record.remote_status not in _REMOTE_FAILURES:
        # Complete media recorded as failed for a reason of ours (not VOD's): it is followed until
        # the record says what VOD says, never created again.
        return Change(Action.FOLLOW, item.name, item.kind, f"media {record.remote_id} recorded; checking its status",
                      item=item, record=record)
    if uncleared:
        return Change(Action.TOUCH, item.name, item.kind, "bookkeeping", item=item, record=record,
                      content_hash=content_hash, uncleared=uncleared)
    stat_moved = item.local is not None and (item.local.path, item.local.total_size, item.local.newest_mtime_ns) != (
        record.source, record.size, record.mtime_ns,
    )
    on_delete_moved = record.options.get(ON_DELETE) != item.options.get(ON_DELETE)
    if stat_moved or record.protect != item.protect or on_delete_moved:
        return Change(
            Action.TOUCH, item.name, item.kind, "bookkeeping", item=item, record=record, content_hash=content_hash
        )
    return None


def _unsettled(item: DesiredItem, record: Record, size: int) -> Change | None:
    """The change of a record whose last step has not settled (a type change, an interrupted or
    failed step, an ingest under way), whatever else the item says; None for a settled one."""
    if record.kind != item.kind:
        return Change(
            Action.REPLACE,
            item.name,
            item.kind,
            f"type changed from {record.kind} to {item.kind}",
            fields=changed_fields(item, record.metadata),
            item=item,
            record=record,
            upload_bytes=size,
            current=record.metadata,
        )
    if record.status in _UNFINISHED:
        return Change(
            Action.RESUME, item.name, item.kind, _UNFINISHED[record.status], item=item, record=record,
            upload_bytes=size,
        )
    if record.status is RecordStatus.FAILED and record.job_id:
        # The URL job is recorded: whatever failed after the submission, following the job is
        # the way on. Submitting again would make a second video (issue 11).
        return Change(Action.FOLLOW, item.name, item.kind, f"URL ingest {record.job_id} recorded; following it",
                      item=item, record=record)
    if record.status is RecordStatus.FAILED and (record.remote_id is None or record.content_hash is None
                                                 and item.kind.uploads_local_file):
        why = f"last attempt failed: {record.last_error}" if record.last_error else "last attempt failed"
        return Change(Action.RESUME, item.name, item.kind, why, item=item, record=record, upload_bytes=size)
    if record.status is RecordStatus.INGESTING:
        # The job delivers what was submitted; an edit since waits for it (`Executor._held_back`).
        fields = changed_fields(item, record.metadata)
        then = "url changed" if item.source != _recorded_source(record) else fields and f"{', '.join(fields)} changed"
        return Change(Action.FOLLOW, item.name, item.kind, "URL ingest in progress" + (f"; then {then}" if then else ""),
                      item=item, record=record)
    return None


def _content_change(
    item: DesiredItem, record: Record, hashes: Mapping[str, str], size: int
) -> tuple[str | None, str | None]:
    """Why the item's content must be uploaded again (None: it need not), and its content hash.

    URL and FileURL are compared as strings; local files by hash when their stat moved."""
    content_hash = record.content_hash
    replace_reason = None
    if item.kind.uploads_local_file:
        if needs_hash(item, record):
            content_hash = hashes.get(item.name)
            if content_hash is None or content_hash != record.content_hash:
                replace_reason = "content changed"
                if record.content_hash and record.content_hash.startswith(IMPORTED_DIFFERS):
                    held = record.content_hash[len(IMPORTED_DIFFERS):]
                    replace_reason = (f"local file differs from the imported media (VOD holds "
                                      f"{f'{held} B' if held else 'an unknown size'}, the local file has {size} B)")
    elif item.source != _recorded_source(record):
        replace_reason = "url changed" if item.kind is Kind.URL else "file_url changed"
    return replace_reason, content_hash


# A register item's creation option: whether pruning it may delete the media, and with it the
# registered OSS object (DeleteVideo is physical; the object is the media's source).
ON_DELETE = "on_delete"
DELETE_SOURCE = "delete-source"


def deletes_users_source(record: Record) -> bool:
    """Whether deleting this record's media would delete an object the user registered, unasked."""
    return record.kind == Kind.REGISTER and record.options.get(ON_DELETE) != DELETE_SOURCE


def _recorded_source(record: Record) -> str:
    """The record's source as items name it now: a URL's credentials redacted (older versions
    stored them), so a state written before is not taken for a new source."""
    return redact_url_userinfo(record.source)


def diff_one(item: DesiredItem, record: Record | None) -> Change | None:
    """The change one item whose content is a string (a URL, a FileURL) needs against its record.
    (A local file's content needs its hash: see `diff`.)"""
    return _diff_one(item, record, {}, None)


def diff_again(change: Change, record: Record | None) -> Change | None:
    """The change an item needs against its record as it is *now*: with a shared state another
    process may have worked on the item between the plan and this process's claim of it. None
    when nothing is left to do (the other process did it)."""
    if change.item is None:  # a delete: still due while the record it was planned from is there
        return change if record is not None and record == change.record else None
    if record == change.record:
        return change
    hashes = {change.name: change.content_hash} if change.content_hash else {}
    return _diff_one(change.item, record, hashes, None)


def diff(
    desired: Sequence[DesiredItem],
    records: Mapping[str, Record],
    *,
    hashes: Mapping[str, str] | None = None,
    remote: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> list[Change]:
    """Every change that would bring the recorded state to the desired one.

    `hashes` maps item names to the digest of their local file, for the items
    `needs_hash` selected. `remote` (from `--refresh`) maps names to the remote
    metadata in our field names, or to None when the media no longer exists.
    Records of drop-folder items and protected records are never deleted.
    """
    hashes = hashes or {}
    changes: list[Change] = []
    wanted = set()
    for item in desired:
        wanted.add(item.name)
        change = _diff_one(item, records.get(item.name), hashes, remote)
        if change is not None:
            changes.append(change)
    for name, record in records.items():
        if name in wanted or record.origin.is_drop:
            continue
        reason = "removed from manifests"
        if record.protect:
            reason += "; protected"
        changes.append(Change(Action.DELETE, name, record.kind, reason, record=record))
    return changes

