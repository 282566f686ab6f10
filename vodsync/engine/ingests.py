"""Work VOD finishes on its own: URL ingests (submitted in batches, then followed), registrations
of OSS objects, and following ingests and transcoding until they settle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from vodsync.cloud.types import RegisterEntry, UrlUploadEntry
from vodsync.desired.items import DesiredItem, Kind
from vodsync.engine.context import RunContext
from vodsync.engine.diff import FAILED_VIDEO, IN_REVIEW, Action, Change, deletes_users_source
from vodsync.engine.execution import (
    URL_BATCH,
    URL_QUERY_BATCH,
    VIDEO_BATCH,
    Outcome,
    Waiting,
    chunks,
    cleanup_intent,
    log,
    meta_json,
    superseded_media,
)
from vodsync.engine.ownership import delete_media
from vodsync.errors import CloudError, VodsyncError
from vodsync.state.records import MediaRef, Op
from vodsync.state.store import Record, RecordStatus


@dataclass(frozen=True)
class Ingests:
    """The worker of URL ingests, registrations and following asynchronous jobs."""

    ctx: RunContext

    def _recorded(self, c: Change) -> tuple[DesiredItem, Record]:
        """The item of a change being carried out, and its record (its intent is written)."""
        rec = self.ctx.store.get(c.name)
        assert c.item is not None and rec is not None
        return c.item, rec

    def url_batches(self, changes: Sequence[Change]) -> list[list[Change]]:
        """UploadMediaByURL calls: at most URL_BATCH items, and small enough for one query string."""
        out: list[list[Change]] = []
        for batch in chunks(changes, URL_BATCH):
            groups = self.ctx.client.url_upload_batches([_url_entry(c.item) for c in batch if c.item], URL_BATCH)
            out.extend([batch[i] for i in group] for group in groups)
        return out

    def submit_urls(self, batch: Sequence[Change]) -> Iterator[Outcome]:
        todo: list[Change] = []
        for c in batch:
            rec = self.ctx.store.get(c.name)
            if rec is not None and rec.status is RecordStatus.INGESTING:
                continue  # adopted by recovery
            old = superseded_media(c, rec)
            if rec is not None and rec.remote_id and c.action is Action.CREATE:
                # Deleted remotely: forget the dead ID, so a failed ingest is retried (RESUME).
                self.ctx.save(rec.replace(remote_id=None))
            assert c.item is not None
            self.ctx.intend(c, supersedes=old, url=c.item.source, metadata=meta_json(c.item),
                         options=dict(c.item.options))
            todo.append(c)
        if not todo:
            return
        entries = [_url_entry(c.item) for c in todo if c.item is not None]
        session = _session_id(self.ctx.store.get(c.name) for c in todo)
        jobs = self.ctx.client.upload_media_by_url(entries, session_id=session)
        with self.ctx.store.transaction():
            for c in todo:
                item, rec = self._recorded(c)
                job = jobs.get(item.fetch)
                if job is None:
                    raise CloudError("MissingJob", f"UploadMediaByURL returned no job for {item.source}")
                # What the record said before: a failed ingest puts it back, so the next plan retries.
                assert rec.intent is not None
                intent = rec.intent.replace(op=Op.INGEST, session=session, previous_source=rec.source,
                                            previous_metadata=rec.metadata)
                self.ctx.save(rec.ingesting(job, intent, source=item.source, metadata=meta_json(item),
                                            options=dict(item.options), protect=item.protect))
        for c in todo:
            yield Outcome(c.name, str(c.action), True, f"submitted URL ingest {jobs[c.item.fetch]}",
                          pending=True)

    def follow(self, names: set[str], deadline: float | None = None) -> Iterator[Outcome]:
        """Follow URL jobs and transcoding until they settle or the wait (`--wait` from now, or
        until `deadline`) runs out; the reporter is told what is waited for, and when it ends."""
        began = self.ctx.now()
        try:
            yield from self._follow_until(names, began, deadline)
        finally:
            self.ctx.reporter.waiting(Waiting(0, 0, self.ctx.now() - began))

    def _follow_until(self, names: set[str], began: float, deadline: float | None) -> Iterator[Outcome]:
        if deadline is None:
            deadline = self.ctx.now() + self.ctx.options.wait
        first = True
        delay = min(0.25, self.ctx.options.poll_interval)  # quick first looks, then back off
        while True:
            records = self.ctx.store.records(
                statuses=(RecordStatus.INGESTING, RecordStatus.DELETING, RecordStatus.PROCESSING))
            if records:  # those this run holds: another process (a shared state) may follow the rest
                mine = self.ctx.mine(records)
                records = {n: r for n, r in records.items() if n in mine}
            # A pruned item whose URL job could not be cancelled is followed too: its video is
            # deleted when the job delivers it.
            ingesting = [r for r in records.values()
                         if r.status in (RecordStatus.INGESTING, RecordStatus.DELETING) and r.job_id]
            processing = [r for r in records.values() if r.status is RecordStatus.PROCESSING and r.remote_id]
            if not ingesting and not processing:
                return
            if not first and (self.ctx.now() >= deadline or self.ctx.stopping.is_set()):
                for r in ingesting:
                    if r.name in names:
                        yield Outcome(r.name, "follow", True, f"still ingesting (job {r.job_id})",
                                      pending=True)
                return
            if not first:
                transcodes = sum(1 for r in processing if r.kind.remote_is_video)
                self.ctx.reporter.waiting(Waiting(transcodes, len(ingesting), self.ctx.now() - began))
                self.ctx.sleep(delay)
                delay = min(delay * 2, self.ctx.options.poll_interval)
            first = False
            try:
                yield from self._poll_jobs(ingesting)
                yield from self._poll_processing(processing)
            except VodsyncError as err:
                log.warning("could not poll VOD for progress: %s", err.message)
                if self.ctx.now() >= deadline:
                    return

    def _poll_jobs(self, ingesting: list[Record]) -> Iterator[Outcome]:
        by_job = {r.job_id: r for r in ingesting}
        for batch in chunks(list(by_job), URL_QUERY_BATCH):
            jobs, missing = self.ctx.client.get_url_upload_infos(batch)
            for job in jobs:
                rec = by_job[job.job_id]
                if rec.status is RecordStatus.DELETING:
                    if job.terminal:
                        delete_media(self.ctx.client, Kind.URL, [job.media_id] if job.media_id else [])
                        self.ctx.store.delete(rec.name)
                        yield Outcome(rec.name, "delete", True,
                                      f"deleted {job.media_id or '(ingest never delivered)'}")
                    continue
                if not job.terminal:
                    if job.status != rec.remote_status:
                        self.ctx.save(rec.replace(remote_status=job.status))
                    continue
                if job.succeeded and job.media_id:
                    old = rec.intent.supersedes if rec.intent is not None else None
                    self.ctx.save(rec.delivered(job.media_id, job_id=None, remote_status=job.status,
                                                last_result="ingested", intent=cleanup_intent(old, job.media_id)))
                    self.ctx.clean_up(rec.name)
                    yield Outcome(rec.name, "ingest", True, f"ingested as {job.media_id}")
                else:
                    why = f"{job.status}: {job.error_code or ''} {job.error_message or ''}".strip()
                    self.ctx.save(_ingest_failed(rec).failed(why, job_id=None, remote_status=job.status))
                    yield Outcome(rec.name, "ingest", False, why)
            for job_id in missing:
                rec = by_job[job_id]
                if rec.status is RecordStatus.DELETING:
                    self.ctx.store.delete(rec.name)
                    continue
                self.ctx.save(_ingest_failed(rec).failed(f"URL job {job_id} no longer exists", job_id=None))
                yield Outcome(rec.name, "ingest", False, f"URL job {job_id} no longer exists")

    def _poll_processing(self, processing: list[Record]) -> Iterator[Outcome]:
        by_id = {r.remote_id: r for r in processing if r.kind.remote_is_video}
        for batch in chunks(list(by_id), VIDEO_BATCH):
            found, missing = self.ctx.client.get_video_infos(batch)
            for vid, media in found.items():
                rec = by_id[vid]
                if media.status == "Normal":
                    self.ctx.save(rec.ready("Normal"))
                elif media.status in IN_REVIEW:
                    why = f"VOD status {media.status}: {IN_REVIEW[media.status]}; not followed further"
                    self.ctx.save(rec.ready(media.status, last_result=why))
                    yield Outcome(rec.name, "follow", True, why)
                elif media.status in FAILED_VIDEO:
                    why = f"VOD status {media.status}: {FAILED_VIDEO[media.status]}"
                    self.ctx.save(rec.failed(why, remote_status=media.status))
                    yield Outcome(rec.name, "follow", False, why)
                elif media.status != rec.remote_status:
                    self.ctx.save(rec.replace(remote_status=media.status))
            for vid in missing:
                rec = by_id[vid]
                self.ctx.save(rec.lost(last_error="deleted remotely"))
        for r in processing:
            if not r.kind.remote_is_video:
                self.ctx.save(r.replace(status=RecordStatus.READY))


    def register_groups(self, changes: list[Change]) -> list[list[Change]]:
        # One call takes one template group, one workflow and one storage address (bucket).
        groups: dict[tuple[Any, Any, str], list[Change]] = {}
        for c in changes:
            assert c.item is not None
            opts = c.item.options
            address = _register_entry(c.item).storage_address
            groups.setdefault((opts.get("template_group_id"), opts.get("workflow_id"), address), []).append(c)
        return list(groups.values())

    def register(self, batch: Sequence[Change]) -> Iterator[Outcome]:
        olds: dict[str, MediaRef] = {}
        for c in batch:
            rec = self.ctx.store.get(c.name)
            old = superseded_media(c, rec)
            if old and rec is not None and deletes_users_source(rec):
                # Deleting the replaced registration would delete its OSS object, the user's file.
                log.warning("%s: the replaced registration %s is left in VOD with its OSS object (give the "
                            "item on_delete: delete-source to delete it)", c.name, old.media_id,
                            extra={"item": c.name})
                old = None
            if old:
                olds[c.name] = MediaRef(old.media_id, old.kind or c.kind)
            elif rec is not None and rec.remote_id and c.action is Action.CREATE:
                # Deleted remotely: forget the dead ID, so a failed registration is retried (RESUME).
                self.ctx.save(rec.replace(remote_id=None))
            self.ctx.intend(c, supersedes=old)
        first = batch[0].item
        assert first is not None
        registered, failed = self.ctx.client.register_media(
            [_register_entry(c.item) for c in batch if c.item is not None],
            template_group_id=first.options.get("template_group_id"),
            workflow_id=first.options.get("workflow_id"),
        )
        by_url = {r.file_url: r for r in registered}
        failed_set = set(failed)
        for c in batch:
            item, rec = self._recorded(c)
            got = by_url.get(item.source)
            if got is None:
                why = ("the object does not exist or is not a media file" if item.source in failed_set
                       else "RegisterMedia did not return it")
                self.ctx.save(rec.failed(why))
                yield Outcome(c.name, str(c.action), False, f"{item.source}: {why}")
                continue
            self.ctx.save(rec.delivered(
                got.media_id, source=item.source, metadata=meta_json(item), options=dict(item.options),
                last_result="registered", intent=cleanup_intent(olds.get(c.name), got.media_id),
            ))
            if not got.new_register:
                # Registered before (by us or someone): make its metadata match the manifest.
                self.ctx.client.update_video_info(got.media_id, dict(item.metadata))
            self.ctx.clean_up(c.name)
            yield Outcome(c.name, str(c.action), True, f"registered {got.media_id}")


def _session_id(records: Iterable[Record | None]) -> str:
    """UploadMediaByURL's SessionId for one submission: derived from the batch's intents
    (item names and when each intent was written), so a retry of the same submission
    carries the same one (and the service refuses it as a repeat if the first landed),
    while a later submission of the same URLs (a new intent) gets a new one."""
    key = json.dumps([(r.name, r.intent.at if r.intent else None) for r in records if r is not None])
    return "vs_" + hashlib.sha1(key.encode()).hexdigest()


def _ingest_failed(rec: Record) -> Record:
    """A failed URL ingest leaves the record as it was before the submission (source, metadata).

    Otherwise a failed replace would look done: the record would name the new URL while
    the old media still serves, and the next plan would see nothing to do.
    """
    intent = rec.intent
    if intent is None or intent.previous_source is None:
        return rec
    previous = intent.previous_metadata
    return rec.replace(source=intent.previous_source, metadata=rec.metadata if previous is None else previous,
                       intent=None)


def _url_entry(item: DesiredItem) -> UrlUploadEntry:
    o = item.options
    return UrlUploadEntry(url=item.fetch, template_group_id=o.get("template_group_id"), workflow_id=o.get("workflow_id"),
                          file_extension=o.get("file_extension"), **_entry_metadata(item))


def _register_entry(item: DesiredItem) -> RegisterEntry:
    return RegisterEntry(file_url=item.source, **_entry_metadata(item))


def _entry_metadata(item: DesiredItem) -> dict[str, Any]:
    m = item.metadata
    return {"title": m.get("title"), "description": m.get("description"), "tags": tuple(m.get("tags", ())),
            "cate_id": m.get("cate_id"), "cover_url": m.get("cover_url")}
