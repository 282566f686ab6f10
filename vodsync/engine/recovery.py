"""Crash recovery: settle every intent an interrupted run recorded before anything new is created.

- videos carry a `ReferenceId` derived from the item name, so a video created
  just before a crash is found again (GetVideoInfos by ReferenceId) and its
  upload continued with RefreshUploadVideo;
- URL ingests are looked up by their source URL (GetURLUploadInfos by
  UploadURLs) and a job submitted after the intent is adopted, not re-submitted;
- images and attached media have no idempotency key and no credential refresh:
  media created after the intent with the item's title and owned by no record
  is an orphan of the interrupted run; it is deleted (it can never receive its
  bytes) and the item is created once more;
- registrations are idempotent per FileURL and simply repeated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from vodsync.desired.items import Kind
from vodsync.engine.execution import (
    iso_to_epoch,
    log,
    reference_id,
)
from vodsync.errors import VodsyncError
from vodsync.logs import redact_url_userinfo
from vodsync.state.store import Record, RecordStatus

# Orphans of an interrupted create are looked for this long before the recorded intent
# (clock skew between us and the service).
ORPHAN_WINDOW = 600.0


class Recovery:
    """Part of `Executor`: `recover()` and how each kind is found again."""

    # ---------------------------------------------------------------- recovery

    def recover(self, names: Iterable[str] | None = None, *, fetch_urls: Mapping[str, str] | None = None) -> None:
        """Settle the intents an interrupted run left behind, before anything new is created.

        `fetch_urls` maps item names to the URL their ingest fetches, where it differs from the
        recorded one (credentials are recorded redacted; the service knows the job by the URL).
        """
        # Only records with an open intent matter here: after a clean run, none.
        for rec in self.store.records(with_intent=True).values():
            if rec.intent and rec.intent.get("op") == "cleanup":
                self._cleanup(rec.name)
        pending = list(self.store.records(statuses=(RecordStatus.CREATING,)).values())
        if names is not None:
            wanted = set(names)
            pending = [r for r in pending if r.name in wanted]
        if not pending:
            return
        records = self.store.records()  # the whole state, but only after an interrupted create
        # Media a record serves, and media a replace keeps serving until its successor is complete.
        owned = {r.remote_id for r in records.values() if r.remote_id} | {
            r.intent.get("supersedes") for r in records.values() if r.intent and r.intent.get("supersedes")}
        owned_jobs = {r.job_id for r in records.values() if r.job_id}
        for rec in pending:
            try:
                if rec.kind == Kind.VIDEO:
                    self._recover_video(rec)
                elif rec.kind in (Kind.IMAGE, Kind.ATTACHED):
                    self._recover_orphans(rec, owned)
                elif rec.kind == Kind.URL:
                    self._recover_url(rec, owned_jobs, (fetch_urls or {}).get(rec.name))
            except VodsyncError as err:
                log.warning("could not settle the interrupted %s of %s: %s", rec.kind, rec.name, err.message)

    def _recover_video(self, rec: Record) -> None:
        ref = rec.reference_id or reference_id(rec.name)
        found, _ = self.client.get_videos_by_reference_ids([ref])
        if ref in found:
            media = found[ref]
            self._save(rec.replace(status=RecordStatus.UPLOADING, remote_id=media.media_id, reference_id=ref))
            log.info("found video %s of %s created by an interrupted run; continuing it", media.media_id, rec.name)

    def _recover_orphans(self, rec: Record, owned: set[str | None]) -> None:
        intent = dict(rec.intent or {})
        title = intent.get("title") or rec.metadata.get("title")
        since = float(intent.get("at", 0)) - ORPHAN_WINDOW
        if not title:
            return
        search_type = "image" if rec.kind == Kind.IMAGE else "attached"
        orphans = []
        # VOD's title search is fuzzy (a substring match): filter exactly here, and where the
        # service shows UserData, require our marker for this item, so media of other items or
        # of other people with a similar or equal title is never taken for our orphan.
        for media in self.client.search_media(search_type, f"Title = '{_quote(title)}'"):
            mid = media.get("MediaId")
            created = iso_to_epoch(media.get("CreationTime"))
            view = _search_view(media)
            if (mid and mid not in owned and (created is None or created >= since)
                    and view.get("Title") == title and _marker_allows(view.get("UserData"), rec.name)):
                orphans.append(mid)
        if orphans:
            self._delete_remote(Kind(rec.kind), orphans)
            log.warning("deleted %d orphaned %s(s) left by an interrupted create of %s: %s",
                        len(orphans), rec.kind, rec.name, ", ".join(orphans))

    def _recover_url(self, rec: Record, owned_jobs: set[str | None], fetch: str | None) -> None:
        intent = rec.intent or {}
        since = float(intent.get("at", 0)) - ORPHAN_WINDOW
        # The URL about to be submitted is the intent's: for a replace, rec.source is still the old one.
        url = intent.get("url") or rec.source
        # Recorded without its credentials; the service knows the job by the URL it was given.
        submitted = fetch if fetch is not None and redact_url_userinfo(fetch) == url else url
        jobs, _ = self.client.get_url_upload_infos_by_urls([submitted])
        mine = [
            j for j in jobs
            if j.job_id not in owned_jobs and (iso_to_epoch(j.creation_time) or since) >= since
            and j.status not in ("DOWNLOAD_FAIL", "UPLOAD_FAIL")
        ]
        if mine:
            job = max(mine, key=lambda j: j.creation_time or "")
            # The job was submitted with the intent's metadata: record it, or the next plan
            # sees every field as changed.
            self._save(rec.replace(status=RecordStatus.INGESTING, job_id=job.job_id, source=url,
                                   metadata=intent.get("metadata", rec.metadata),
                                   options=intent.get("options", rec.options)))
            log.info("adopted URL job %s of %s submitted by an interrupted run", job.job_id, rec.name)


def _search_view(media: Mapping[str, Any]) -> Mapping[str, Any]:
    """The media's own fields in a SearchMedia result ({"MediaId", "Image": {...}})."""
    for key in ("Image", "AttachedMedia", "Video", "Audio"):
        if isinstance(media.get(key), Mapping):
            return media[key]
    return media


def _marker_allows(raw: Any, name: str) -> bool:
    """False when the media's UserData is visible and is not our marker for `name`."""
    if not raw:
        return True  # the service does not show UserData here: the exact title must do
    try:
        extend = json.loads(raw).get("Extend") if isinstance(raw, str) else raw.get("Extend")
        if isinstance(extend, str):
            extend = json.loads(extend)
        return isinstance(extend, Mapping) and extend.get("vodsync") == name
    except (ValueError, AttributeError):
        return False


def _quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")
