"""Adopting media that already exists: `vodsync import NAME MEDIA_ID` and `import_id:` in a manifest.

An import reads the media (GetVideoInfos, GetImageInfo or GetAttachedMediaInfo,
by the item's kind), records what is there as the item's record and makes no
write call. The next plan then shows only real differences:

- metadata is recorded as VOD holds it, so a differing title plans an update;
- for a local file, the remote size is compared with the file's (the service's
  reads expose no checksum of the original, so size is what can be compared).
  When they match, the file's CRC-64 is recorded as the content identity and the
  file is not uploaded again. When they differ, the record says so
  (`IMPORTED_DIFFERS`) and the plan shows a replace with both sizes: the
  mismatch is shown, never silently re-uploaded, and never silently accepted.

`discover` (rebuilding a lost state from the markers vodsync writes) needs the
state namespaces of issue 12 point 10; it is the seam where it will live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vodsync.checksum import file_digest
from vodsync.cloud.types import RemoteMedia
from vodsync.desired.items import DesiredItem, Kind
from vodsync.engine.diff import IMPORTED_DIFFERS
from vodsync.engine.execution import origin_of
from vodsync.engine.remote import remote_metadata
from vodsync.errors import CloudError, VodsyncError
from vodsync.state.store import Record, RecordStatus, StateStore

if TYPE_CHECKING:
    from vodsync.cloud.vod import VodClient

# Remote statuses an import records as settled; others are refused (the media is not complete).
_READY = frozenset({"Normal", "UploadSucc"})
_PROCESSING = frozenset({"Transcoding", "Checking"})


class ImportRefused(VodsyncError):
    """The media cannot be imported as this item (missing, still uploading, already recorded)."""


def read_media(client: VodClient, kind: Kind, media_id: str) -> RemoteMedia | None:
    """The media `media_id` as the kind's read call returns it, or None when it does not exist."""
    if kind.remote_is_video:
        try:
            found, _ = client.get_video_infos([media_id])
        except CloudError as err:
            if err.code == "InvalidVideo.NotFound":  # when every requested id is missing (vod-api.md §00)
                return None
            raise
        return found.get(media_id)
    if kind is Kind.IMAGE:
        return client.get_image_info(media_id)
    found, _ = client.get_attached_media_infos([media_id])
    return found.get(media_id)


def import_record(
    item: DesiredItem,
    media: RemoteMedia,
    *,
    hash_file: Callable[[str], str] = file_digest,
) -> Record:
    """The record that adopts `media` as `item` (see the module docstring for what is compared)."""
    if media.status in _READY:
        status = RecordStatus.READY
    elif media.status in _PROCESSING and item.kind.remote_is_video:
        status = RecordStatus.PROCESSING
    else:
        raise ImportRefused(
            f"{item.name}: media {media.media_id} is {media.status or 'in an unknown status'}; "
            "import it once it is complete (Normal)"
        )
    content_hash = size = mtime_ns = None
    result = "imported"
    if item.local is not None:
        if media.size is not None and media.size == item.local.size:
            content_hash = hash_file(item.local.path)
            size, mtime_ns = item.local.size, item.local.mtime_ns
            result += "; its size matches the local file"
        else:
            content_hash = f"{IMPORTED_DIFFERS}{'' if media.size is None else media.size}"
            size = media.size
            remote = "an unknown size" if media.size is None else f"{media.size} B"
            result += f"; VOD holds {remote}, the local file has {item.local.size} B: the next plan replaces it"
    return Record(
        name=item.name,
        kind=str(item.kind),
        status=status,
        source=item.source,
        remote_id=media.media_id,
        reference_id=media.reference_id if item.kind is Kind.VIDEO else None,
        content_hash=content_hash,
        size=size,
        mtime_ns=mtime_ns,
        metadata={k: v for k, v in remote_metadata(media).items() if v not in (None, "", ())},
        options=dict(item.options),
        remote_status=media.status,
        origin=origin_of(item),
        protect=item.protect,
        last_result=result,
    )


def import_media(store: StateStore, client: VodClient, item: DesiredItem, media_id: str) -> Record:
    """Read `media_id` and record it as `item`. Refused (nothing written) when `item` is already
    recorded, or the media does not exist as the item's kind or is not complete."""
    existing = store.get(item.name)
    if existing is not None:
        raise ImportRefused(
            f"{item.name} is already recorded (as {existing.kind} {existing.remote_id or '(no media yet)'}); "
            f"`vodsync state rm {item.name}` first to import other media as it"
        )
    media = read_media(client, item.kind, media_id)
    if media is None:
        what = "video" if item.kind.remote_is_video else "image" if item.kind is Kind.IMAGE else "attached media"
        raise ImportRefused(f"{item.name}: no {what} with ID {media_id} exists in this account and region "
                            f"({item.name} is a {item.kind} item)")
    record = import_record(item, media)
    store.put(record)
    return record


def discover(store: StateStore, client: VodClient, desired: list[DesiredItem]) -> list[Record]:
    """`vodsync import --discover`: find the media this state's namespace created and record it.

    Not built yet: telling our media from another state's needs the per-state namespaces
    of issue 12 point 10 (ReferenceIds and markers derived from namespace + name).
    """
    raise VodsyncError("import --discover needs state namespaces (issue 12 point 10); not available yet")
