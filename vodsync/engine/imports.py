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

`discover` rebuilds a lost state from the ReferenceIds and markers a state's namespace
gives its media (`ownership.py`); its docstring says what is found, and how.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from vodsync.checksum import file_digest
from vodsync.cloud.types import RemoteMedia
from vodsync.desired.items import DesiredItem, Kind
from vodsync.engine.diff import IMPORTED_DIFFERS
from vodsync.engine.execution import URL_QUERY_BATCH, VIDEO_BATCH, chunks
from vodsync.engine.ownership import NAMESPACE_KEY, Namespace, marker_of, search, state_namespace
from vodsync.engine.ownership import read_media as read_media_batch
from vodsync.engine.remote import remote_metadata
from vodsync.errors import CloudError, VodsyncError
from vodsync.state.interface import Store
from vodsync.state.store import Record, RecordStatus

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
        origin=item.made_by,
        protect=item.protect,
        last_result=result,
    )


def import_media(store: Store, client: VodClient, item: DesiredItem, media_id: str) -> Record:
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


@dataclass(frozen=True)
class Discovery:
    """What `discover` found: the namespace it adopted, the records it wrote, and per item
    not found, why (`missing`); items already recorded are left alone (`kept`)."""

    namespace: Namespace
    found: list[Record] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def discover(
    store: Store, client: VodClient, desired: list[DesiredItem], *,
    namespace: str | None = None, pinned: str | None = None,
) -> Discovery:
    """`vodsync import --discover`: find the media a state's namespace created and record it
    against the manifests' items that the state does not record. Read calls only.

    - The namespace: the state's recorded one, else `namespace` (`--namespace`), else `pinned`
      (the config's `namespace:`), else the one namespace (or the name-only `legacy` scheme)
      whose markers name the manifests' items; several are refused, listed, and none found
      leaves a new namespace. It is recorded in the state.
    - Videos: GetVideoInfos by the namespace's ReferenceIds, 20 at a time.
    - Images and attached media: SearchMedia by the manifests' titles (with `Fields`), then the
      marker in the UserData read back (GetImageInfo / GetAttachedMediaInfo); the newest
      complete one when an earlier lost state left several.
    - URL ingests carry no marker: GetURLUploadInfos by the item's URL, the newest job whose
      video still exists and carries no other namespace's marker.
    - Registrations carry no marker either: SearchMedia by title, adopted only when exactly
      one video with exactly that title, unmarked and not claimed by another item, exists.
      RegisterMedia would answer for the FileURL, but it is a write call (and registers
      the object when it was not), so it is not used.
    """
    todo = [i for i in desired if store.get(i.name) is None]
    kept = [i.name for i in desired if store.get(i.name) is not None]
    marked = _marked_media(client, [i for i in todo if i.kind.uploads_local_file])
    ns = state_namespace(store, _choose_namespace(store, marked, namespace, pinned))
    claimed = {r.remote_id for r in store.records().values() if r.remote_id}
    found_media: dict[str, RemoteMedia] = {}
    missing: list[tuple[str, str]] = []
    videos = {i.name: ns.reference_id(i.name) for i in todo if i.kind is Kind.VIDEO}
    for batch in chunks(list(videos.items()), VIDEO_BATCH):
        by_ref, _ = client.get_videos_by_reference_ids([ref for _, ref in batch])
        found_media.update({name: by_ref[ref] for name, ref in batch if ref in by_ref})
    for item in todo:
        if item.kind in (Kind.IMAGE, Kind.ATTACHED):
            ours = [m for (kind, name, value), ms in marked.items() for m in ms
                    if (kind, name, value) == (item.kind, item.name, ns.value)]
            if ours:
                found_media[item.name] = max(ours, key=lambda m: (m.status in _READY, m.creation_time or ""))
    found_media.update(_url_ingests(client, [i for i in todo if i.kind is Kind.URL]))
    claimed |= {m.media_id for m in found_media.values()}
    for item in (i for i in todo if i.kind is Kind.REGISTER):
        media, why = _registration(client, item, claimed)
        if media is None:
            missing.append((item.name, why))
        else:
            found_media[item.name] = media
            claimed.add(media.media_id)
    records: list[Record] = []
    for item in todo:
        media = found_media.get(item.name)
        if media is None:
            if item.kind is not Kind.REGISTER:
                missing.append((item.name, _not_found(item, ns)))
            continue
        try:
            record = import_record(item, media)
        except ImportRefused as err:
            missing.append((item.name, str(err)))
            continue
        store.put(record)
        records.append(record)
    order = {i.name: n for n, i in enumerate(desired)}
    missing.sort(key=lambda m: order[m[0]])
    return Discovery(ns, records, missing, kept)


# (kind, item name, namespace) -> media of that kind carrying that marker
Marked = dict[tuple[Kind, str, str], list[RemoteMedia]]


def _marked_media(client: VodClient, items: list[DesiredItem]) -> Marked:
    """Media found by the items' titles whose UserData marker names one of the items (any namespace)."""
    names = {(i.kind, i.name) for i in items}
    out: Marked = {}
    for kind in (Kind.VIDEO, Kind.IMAGE, Kind.ATTACHED):
        titles = sorted({str(i.metadata.get("title") or "") for i in items if i.kind is kind})
        hits = {h.media_id: h for t in titles for h in search(client, kind, title=t or None)}
        for media in read_media_batch(client, kind, list(hits)).values():
            marker = marker_of(media.user_data)
            if marker is not None and (kind, marker.name) in names:
                out.setdefault((kind, marker.name, marker.namespace), []).append(media)
    return out


def _choose_namespace(store: Store, marked: Marked, flag: str | None, pinned: str | None) -> str | None:
    """The namespace to adopt (None: a new one), by the rules in `discover`'s docstring."""
    recorded = store.get_meta(NAMESPACE_KEY)
    chosen = recorded or flag or pinned
    for other, what in ((flag, "--namespace"), (pinned, "the config's namespace:")):
        if chosen and other and other != chosen:
            holder = f"state file {store.location} records" if recorded else "--namespace gives"
            raise ImportRefused(f"{holder} namespace {chosen!r}, but {what} says {other!r}")
    if chosen:
        return chosen
    counts: dict[str, set[str]] = {}
    for _, name, value in marked:
        counts.setdefault(value, set()).add(name)
    if len(counts) > 1:
        listed = ", ".join(f"{ns} ({len(names)} items)" for ns, names in sorted(counts.items()))
        raise ImportRefused(f"the media of several namespaces matches the manifests' items: {listed}; "
                            "pick one with `vodsync import --discover --namespace NS`")
    return next(iter(counts), None)


def _url_ingests(client: VodClient, items: list[DesiredItem]) -> dict[str, RemoteMedia]:
    """item name -> the video its newest ingest made, for URL items (see `discover`)."""
    out: dict[str, RemoteMedia] = {}
    for batch in chunks(items, URL_QUERY_BATCH):
        jobs, _ = client.get_url_upload_infos_by_urls([i.fetch for i in batch])
        media = read_media_batch(client, Kind.VIDEO, sorted({j.media_id for j in jobs if j.media_id}))
        for item in batch:
            mine = sorted((j for j in jobs if j.url in (item.fetch, item.source) or unquote(j.url) == item.fetch),
                          key=lambda j: j.creation_time or "", reverse=True)
            for job in mine:
                video = media.get(job.media_id or "")
                if video is not None and marker_of(video.user_data) is None:
                    out[item.name] = video
                    break
    return out


def _registration(client: VodClient, item: DesiredItem, claimed: set[str]) -> tuple[RemoteMedia | None, str]:
    """The one video that can be item's registration (see `discover`), or None and why not."""
    title = str(item.metadata.get("title") or "")
    hits = [h.media_id for h in search(client, Kind.VIDEO, title=title) if h.media_id not in claimed]
    candidates = [m for m in read_media_batch(client, Kind.VIDEO, hits).values()
                  if m.title == title and marker_of(m.user_data) is None and m.reference_id is None]
    if len(candidates) == 1:
        return candidates[0], ""
    if not candidates:
        return None, f"no unclaimed video titled {title!r} (registrations carry no marker; found by title)"
    ids = ", ".join(sorted(m.media_id for m in candidates))
    return None, (f"{len(candidates)} videos are titled {title!r} ({ids}); "
                  f"`vodsync import {item.name} MEDIA_ID` the right one")


def _not_found(item: DesiredItem, ns: Namespace) -> str:
    if item.kind is Kind.VIDEO:
        return f"no video with ReferenceId {ns.reference_id(item.name)} (namespace {ns.value})"
    if item.kind is Kind.URL:
        return f"no URL ingest of {item.source} left a video"
    title = item.metadata.get("title")
    return f"no {item.kind} titled {title!r} carries namespace {ns.value}'s marker for {item.name}"
