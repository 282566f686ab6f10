"""What VOD holds for the recorded items, read in batches (`--refresh`).

Returns the remote metadata in our own field names, or None for media that no
longer exists, so `diff` can plan a fix for drift made in the console.
Videos are read 20 at a time (GetVideoInfos), attached media 20 at a time;
images one by one (the API has no batch read for them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vodsync.cloud.types import RemoteMedia
from vodsync.cloud.vod import VodClient
from vodsync.desired.items import Kind
from vodsync.state.store import Record, RecordStatus

BATCH = 20
_SETTLED = (RecordStatus.READY, RecordStatus.PROCESSING)


def remote_metadata(media: RemoteMedia) -> dict[str, Any]:
    return {
        "title": media.title,
        "description": media.description,
        "tags": tuple(media.tags),
        "cate_id": media.cate_id,
        "cover_url": media.cover_url,
    }


def read_remote(client: VodClient, records: Mapping[str, Record]) -> dict[str, dict[str, Any] | None]:
    """Remote metadata by item name for every settled record (None: deleted remotely)."""
    videos: dict[str, str] = {}
    attached: dict[str, str] = {}
    out: dict[str, dict[str, Any] | None] = {}
    for r in records.values():
        if r.status not in _SETTLED or not r.remote_id:
            continue
        kind = r.kind
        if kind.remote_is_video:
            videos[r.remote_id] = r.name
        elif kind is Kind.ATTACHED:
            attached[r.remote_id] = r.name
        else:
            media = client.get_image_info(r.remote_id)
            out[r.name] = remote_metadata(media) if media else None
    for ids, read in ((videos, client.get_video_infos), (attached, client.get_attached_media_infos)):
        keys = list(ids)
        for i in range(0, len(keys), BATCH):
            found, missing = read(keys[i : i + BATCH])
            for mid, media in found.items():
                out[ids[mid]] = remote_metadata(media)
            for mid in missing:
                out[ids[mid]] = None
    return out
