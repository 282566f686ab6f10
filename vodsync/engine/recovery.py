"""Crash recovery: settle every intent an interrupted run recorded before anything new is created.

- videos carry a `ReferenceId` derived from the state's namespace and the item
  name, so a video created just before a crash is found again (GetVideoInfos by
  ReferenceId) and its upload continued with RefreshUploadVideo, unless its
  marker names another namespace or item;
- URL ingests are looked up by their source URL (GetURLUploadInfos by
  UploadURLs) and a job submitted after the intent is adopted, not re-submitted;
- images and attached media have no idempotency key and no credential refresh:
  media created after the intent with exactly the item's title (searched by title
  and creation time), carrying this state's marker for the item (read back with
  GetImageInfo / GetAttachedMediaInfo) and owned by no record is an orphan of the
  interrupted run; it is deleted (it can never receive its bytes) and the item is
  created once more (`ownership.py` has the rules);
- registrations are idempotent per FileURL and simply repeated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vodsync.cloud.types import iso_to_epoch
from vodsync.desired.items import Kind
from vodsync.engine.context import RunContext
from vodsync.engine.execution import log
from vodsync.engine.ownership import delete_media, find_marked, owned_media, search
from vodsync.errors import CredentialsRejected, VodsyncError
from vodsync.logs import redact_url_userinfo
from vodsync.state.records import Intent, Op
from vodsync.state.store import Record, RecordStatus

# Orphans of an interrupted create are looked for this long before the recorded intent
# (clock skew between us and the service).
ORPHAN_WINDOW = 600.0


@dataclass(frozen=True)
class Recovery:
    """The worker that settles recorded intents (`recover()`), and how each kind is found again."""

    ctx: RunContext

    def recover(self, names: Iterable[str] | None = None, *, fetch_urls: Mapping[str, str] | None = None) -> None:
        """Settle the intents an interrupted run left behind, before anything new is created.

        `fetch_urls` maps item names to the URL their ingest fetches, where it differs from the
        recorded one (credentials are recorded redacted; the service knows the job by the URL).
        """
        # Only records with an open intent matter here: after a clean run, none. Of the cleanups among
        # them, those this run holds (a shared state: another process may be settling the others now).
        cleanups = [r for r in self.ctx.store.records(with_intent=True).values()
                    if r.intent is not None and r.intent.op is Op.CLEANUP]
        mine = self.ctx.mine(r.name for r in cleanups) if cleanups else set()
        for rec in cleanups:
            if rec.name in mine:
                try:
                    self.ctx.clean_up(rec.name)
                except VodsyncError as err:  # one stuck cleanup must not stop every later run
                    log.warning("could not delete the media %s replaced: %s", rec.name, err.message)
        pending = list(self.ctx.store.records(statuses=(RecordStatus.CREATING,)).values())
        if names is not None:
            wanted = set(names)
            pending = [r for r in pending if r.name in wanted]
        if pending:
            mine = self.ctx.mine(r.name for r in pending)
            pending = [r for r in pending if r.name in mine]
        if not pending:
            return
        records = self.ctx.store.records()  # the whole state, but only after an interrupted create
        owned = owned_media(records)
        owned_jobs = {r.job_id for r in records.values() if r.job_id}
        for rec in pending:
            try:
                if rec.kind is Kind.VIDEO:
                    self._recover_video(rec)
                elif rec.kind in (Kind.IMAGE, Kind.ATTACHED):
                    self._recover_orphans(rec, owned)
                elif rec.kind is Kind.URL:
                    self._recover_url(rec, owned_jobs, (fetch_urls or {}).get(rec.name))
            except CredentialsRejected:
                raise  # no other record could be settled either: the run stops with this one message
            except VodsyncError as err:
                log.warning("could not settle the interrupted %s of %s: %s", rec.kind, rec.name, err.message)

    def _recover_video(self, rec: Record) -> None:
        ref = rec.reference_id or self.ctx.namespace.reference_id(rec.name)
        found, _ = self.ctx.client.get_videos_by_reference_ids([ref])
        media = found.get(ref)
        if media is None:
            return
        # The ReferenceId is derived from our namespace, so the video is ours unless its marker
        # says otherwise (a state pinned to someone else's namespace): never adopt that.
        if media.user_data and not self.ctx.namespace.owns(media.user_data, rec.name):
            log.warning("video %s has %s's ReferenceId but another state's marker; not adopting it",
                        media.media_id, rec.name)
            return
        self.ctx.save(rec.created(media.media_id, rec.intent, reference_id=ref))
        log.info("found video %s of %s created by an interrupted run; continuing it", media.media_id, rec.name)

    def _recover_orphans(self, rec: Record, owned: set[str]) -> None:
        intent = rec.intent or Intent(Op.CREATE)
        title, since = intent.title or rec.metadata.get("title"), float(intent.at or 0) - ORPHAN_WINDOW
        if not title:
            return
        kind = rec.kind
        # VOD's title search is fuzzy (a substring match): filter exactly here; the marker read
        # back from the media itself decides, so media of other items, of other states or of
        # other people with a similar or equal title is never taken for our orphan.
        hits = [h for h in search(self.ctx.client, kind, title=title, since=since)
                if h.media_id not in owned and h.title in (None, title) and (h.created or since) >= since]
        orphans = [m.media_id for m in find_marked(self.ctx.client, kind, self.ctx.namespace, hits, name=rec.name)
                   if m.title == title]
        if orphans:
            delete_media(self.ctx.client, kind, orphans)
            log.warning("deleted %d orphaned %s(s) left by an interrupted create of %s: %s",
                        len(orphans), rec.kind, rec.name, ", ".join(orphans))

    def _recover_url(self, rec: Record, owned_jobs: set[str | None], fetch: str | None) -> None:
        intent = rec.intent or Intent(Op.CREATE)
        since = float(intent.at or 0) - ORPHAN_WINDOW
        # The URL about to be submitted is the intent's: for a replace, rec.source is still the old one.
        url = intent.url or rec.source
        # Recorded without its credentials; the service knows the job by the URL it was given.
        submitted = fetch if fetch is not None and redact_url_userinfo(fetch) == url else url
        jobs, _ = self.ctx.client.get_url_upload_infos_by_urls([submitted])
        mine = [
            j for j in jobs
            if j.job_id not in owned_jobs and (iso_to_epoch(j.creation_time) or since) >= since
            and j.status not in ("DOWNLOAD_FAIL", "UPLOAD_FAIL")
        ]
        if mine:
            job = max(mine, key=lambda j: j.creation_time or "")
            # The job was submitted with the intent's metadata: record it, or the next plan
            # sees every field as changed.
            self.ctx.save(rec.ingesting(job.job_id, rec.intent, source=url,
                                        metadata=rec.metadata if intent.metadata is None else intent.metadata,
                                        options=rec.options if intent.options is None else intent.options))
            log.info("adopted URL job %s of %s submitted by an interrupted run", job.job_id, rec.name)
