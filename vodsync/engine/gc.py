"""`vodsync gc`: find, and with `--yes` remove, what interrupted runs left behind that no record owns.

Two kinds of leftovers:

1. **Media stuck in `Uploading`** for longer than an upload credential lives
   (3,000 s, vod-api.md §2), so no upload that is still running can be filling
   it, that carry this state's marker and that no state record owns. SearchMedia
   shows neither UserData nor ReferenceId, so candidates are searched with
   `Status in ('Uploading')` and a creation-time window, and the marker is read
   back with GetVideoInfos / GetImageInfo / GetAttachedMediaInfo: UserData
   `{"Extend": {"vodsync": <item>, "ns": <this state's namespace>}}` (no `ns`:
   a state of the name-only scheme). Media of another namespace, or without our
   marker, is never touched (`ownership.py` has the rules).
   A record owns media through its `remote_id`, through the media a replace keeps
   serving (`intent.supersedes`), and, for videos, through its ReferenceId (an
   interrupted create the next apply adopts).

2. **Abandoned multipart uploads.** OSS's ListMultipartUploads is a bucket-level
   call that an UploadAuth (scoped to one object) may not make, so the source is
   the checkpoint directory beside the state file: every checkpoint names the
   bucket, key and upload id of a multipart upload. One whose local file no
   unfinished record is uploading is abandoned. Where vodsync can get a credential
   for its key without side effects on live media (an orphaned video that gc
   removes anyway: RefreshUploadVideo), the upload is aborted; otherwise it is
   reported, and `--yes` forgets the checkpoint (it can never be resumed).

Dry run by default: nothing is changed without `yes=True`. Exit code 0, or 1
when removal failed for something.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vodsync.cloud.types import iso_to_epoch
from vodsync.cloud.upload import Checkpoint, abort_checkpointed, list_checkpoints
from vodsync.cloud.vod import DEFAULT_UPLOAD_AUTH_LIFETIME, VodClient
from vodsync.desired.items import Kind
from vodsync.engine.execution import VIDEO_BATCH, chunks
from vodsync.engine.ownership import (
    Namespace,
    delete_media,
    find_marked,
    marker_of,
    owned_media,
    search,
    state_namespace,
)
from vodsync.errors import VodsyncError
from vodsync.state.interface import Store
from vodsync.state.store import Record, RecordStatus

log = logging.getLogger("vodsync.gc")

CREDENTIAL_LIFETIME = float(DEFAULT_UPLOAD_AUTH_LIFETIME)
_KINDS = (Kind.VIDEO, Kind.IMAGE, Kind.ATTACHED)
_UNFINISHED = (RecordStatus.CREATING, RecordStatus.UPLOADING, RecordStatus.FAILED)


@dataclass(frozen=True)
class OrphanMedia:
    kind: str  # video | image | attached
    media_id: str
    title: str
    age: float  # seconds since creation
    why: str


@dataclass(frozen=True)
class AbandonedUpload:
    checkpoint: Checkpoint
    video_id: str | None = None  # an orphaned video at that key: its refresh gives a credential to abort


@dataclass
class Findings:
    media: list[OrphanMedia] = field(default_factory=list)
    uploads: list[AbandonedUpload] = field(default_factory=list)
    junk: list[Path] = field(default_factory=list)  # unreadable/temporary checkpoint files

    @property
    def empty(self) -> bool:
        return not (self.media or self.uploads or self.junk)


def find_leftovers(
    records: Mapping[str, Record],
    client: VodClient,
    *,
    namespace: Namespace,
    checkpoints: Path,
    now: float,
    lifetime: float = CREDENTIAL_LIFETIME,
) -> Findings:
    """Everything gc would remove; reads only (SearchMedia, Get*Info, and the checkpoint directory)."""
    found = Findings()
    owned = owned_media(records)
    refs = {r.reference_id or namespace.reference_id(r.name) for r in records.values() if r.kind is Kind.VIDEO}
    for kind in _KINDS:
        hits = [h for h in search(client, kind, uploading=True, until=now - lifetime)
                if h.media_id not in owned and h.status in (None, "Uploading")]
        for media in find_marked(client, kind, namespace, hits):
            created = iso_to_epoch(media.creation_time)
            if media.status != "Uploading" or created is None or now - created <= lifetime:
                continue
            if kind is Kind.VIDEO and media.reference_id in refs:
                continue  # an interrupted create the next apply adopts
            marker = marker_of(media.user_data)
            assert marker is not None
            found.media.append(OrphanMedia(str(kind), media.media_id, media.title, now - created,
                                           f"UserData marks it as item {marker.name!r} of this state"))

    live_files = {r.source for r in records.values() if r.status in _UNFINISHED}
    cps, found.junk = list_checkpoints(checkpoints)
    for cp in cps:
        if cp.file_path not in live_files:
            found.uploads.append(AbandonedUpload(cp))
    return found


def run_gc(
    store: Store,
    client: VodClient,
    *,
    yes: bool,
    out: IO[str],
    clock: Callable[[], float] | None = None,
    lifetime: float = CREDENTIAL_LIFETIME,
    namespace: Namespace | None = None,
) -> int:
    """List the leftovers; with `yes`, remove them. Returns the exit code. With a shared state,
    one process at a time (the leader daemon's gc, or a user's)."""
    with store.alone("gc") as alone:
        if not alone:
            print("Another process is running gc on this state now; try again when it is done.", file=out)
            return 1
        return _gc(store, client, yes=yes, out=out, clock=clock, lifetime=lifetime, namespace=namespace)


def _gc(
    store: Store,
    client: VodClient,
    *,
    yes: bool,
    out: IO[str],
    clock: Callable[[], float] | None,
    lifetime: float,
    namespace: Namespace | None,
) -> int:
    found = find_leftovers(store.records(), client, namespace=namespace or state_namespace(store),
                           checkpoints=store.checkpoint_dir, now=(clock or _now)(), lifetime=lifetime)
    if found.empty:
        print("Nothing to collect: no orphaned media, no abandoned uploads.", file=out)
        return 0
    verb = "Found" if yes else "Would remove"
    for m in found.media:
        print(f"  {m.kind:<8} {m.media_id}  {m.title!r}  Uploading for {_hours(m.age)}  ({m.why})", file=out)
    for u in found.uploads:
        cp = u.checkpoint
        print(f"  upload   {cp.upload_id}  {cp.bucket}/{cp.key}  {cp.parts} part(s) of {cp.file_path}", file=out)
    for path in found.junk:
        print(f"  file     {path}  (not a usable checkpoint)", file=out)
    print(f"{verb}: {len(found.media)} orphaned media, {len(found.uploads)} abandoned multipart upload(s), "
          f"{len(found.junk)} stray checkpoint file(s).", file=out)
    if not yes:
        print("Dry run: nothing was changed. Run `vodsync gc --yes` to remove these.", file=out)
        return 0
    return _remove(found, store.records(), client, out)


@dataclass
class _Done:
    """What `gc --yes` actually did, for a summary that counts only that."""

    deleted: int = 0
    aborted: int = 0
    forgotten: int = 0  # uploads that could not be aborted: their checkpoints are dropped, with the reason
    files: int = 0
    failures: int = 0

    def summary(self) -> str:
        parts = [f"deleted {self.deleted} orphaned media", f"aborted {self.aborted} multipart upload(s)",
                 f"removed {self.files} stray checkpoint file(s)"]
        if self.forgotten:
            parts.append(f"{self.forgotten} upload(s) could not be aborted (why is said above)")
        tail = f"; {self.failures} failure(s)" if self.failures else ""
        return f"Done: {', '.join(parts)}{tail}."


def _remove(found: Findings, records: Mapping[str, Record], client: VodClient, out: IO[str]) -> int:
    done = _Done()
    # Abort uploads first: an orphaned video's refresh (the credential that can abort them)
    # is only possible while the video exists.
    tickets: dict[tuple[str, str], Any] = {}
    refused: dict[str, str] = {}  # orphaned video -> why no credential could be had for it
    for m in found.media:
        if m.kind != "video":
            continue
        try:
            t = client.refresh_upload_video(video_id=m.media_id)
            tickets[(t.address.bucket, t.address.key)] = t
        except VodsyncError as err:
            refused[m.media_id] = err.message
    for u in found.uploads:
        cp = u.checkpoint
        ticket = tickets.get((cp.bucket, cp.key))
        try:
            if ticket is not None:
                abort_checkpointed(ticket, cp)
                done.aborted += 1
                print(f"  aborted upload {cp.upload_id} ({cp.bucket}/{cp.key})", file=out)
            else:
                cp.path.unlink(missing_ok=True)
                done.forgotten += 1
                print(f"  forgot upload {cp.upload_id} ({cp.bucket}/{cp.key}): {_why_not(cp, records, refused)}; "
                      "its parts stay until VOD's storage expires them", file=out)
        except (VodsyncError, OSError) as err:
            done.failures += 1
            print(f"  could not abort {cp.upload_id}: {getattr(err, 'message', err)}", file=out)
    by_kind: dict[str, list[str]] = {}
    for m in found.media:
        by_kind.setdefault(m.kind, []).append(m.media_id)
    for kind, ids in by_kind.items():
        for batch in chunks(ids, VIDEO_BATCH):
            try:
                delete_media(client, Kind(kind), batch)
                for mid in batch:
                    print(f"  deleted {kind} {mid}", file=out)
                done.deleted += len(batch)
            except VodsyncError as err:
                done.failures += len(batch)
                print(f"  could not delete {kind}s {', '.join(batch)}: {err.message}", file=out)
    for path in found.junk:
        try:
            path.unlink(missing_ok=True)
            done.files += 1
        except OSError as err:
            done.failures += 1
            print(f"  could not remove {path}: {err.strerror}", file=out)
    print(done.summary(), file=out)
    return 0 if not done.failures else 1


def _why_not(cp: Checkpoint, records: Mapping[str, Record], refused: Mapping[str, str]) -> str:
    """Exactly why no credential for the key of `cp` could be had (OSS aborts need one for that key,
    and only VOD issues them: for a video through RefreshUploadVideo, for nothing else)."""
    owners = [r for r in records.values() if r.source == cp.file_path and r.remote_id]
    for r in owners:
        if r.remote_id in refused:
            return f"RefreshUploadVideo of video {r.remote_id} failed: {refused[r.remote_id]}"
    for r in owners:
        if r.kind is Kind.VIDEO:
            return (f"its key belongs to video {r.remote_id} of item {r.name!r}, which is live: a credential for "
                    "it (RefreshUploadVideo) would put that video back to Uploading")
        return (f"its key belongs to the {r.kind} media {r.remote_id} of item {r.name!r}; VOD has no call that "
                f"issues a new upload credential for an image or attached media")
    if refused:
        failed = "; ".join(f"{mid}: {why}" for mid, why in refused.items())
        return f"no record names the media at that key, and RefreshUploadVideo failed for orphaned video(s) {failed}"
    return ("no record and no orphaned video names the media at that key (it was deleted or replaced), and VOD "
            "issues upload credentials only for media that exist")


def _now() -> float:
    return time.time()


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
