"""Carry out a plan against VOD and OSS, recording every outcome. The engine's only I/O stage.

Crash safety rests on one rule: *write the intent to the state file before any
create call, and the returned ID right after it*. After a crash, `recover()`
settles every recorded intent before anything new is created:

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

A failure in one item never stops the others: each task records its own
outcome and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vodsync.checksum import digest_of
from vodsync.cloud.types import RegisterEntry, UploadTicket, UrlUploadEntry
from vodsync.desired.items import DesiredItem, Kind
from vodsync.engine.diff import Action, Change, changed_fields
from vodsync.engine.plan import Plan
from vodsync.errors import CloudError, CredentialExpired, VodsyncError
from vodsync.state.store import Record, RecordStatus, StateStore

if TYPE_CHECKING:  # the SDKs (oss2, aliyunsdkcore) cost ~0.3 s to import; `plan` never needs them
    from vodsync.cloud.vod import VodClient

log = logging.getLogger("vodsync.apply")

# Orphans of an interrupted create are looked for this long before the recorded intent
# (clock skew between us and the service).
ORPHAN_WINDOW = 600.0
VIDEO_BATCH, URL_BATCH, URL_QUERY_BATCH, REGISTER_BATCH, UPDATE_BATCH = 20, 20, 10, 10, 20
MAX_FRESH_CREATES = 3  # images/attached: new media after an expired credential, at most


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


def _chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _iso_to_epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _meta_json(item: DesiredItem) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in item.metadata.items()}


class Executor:
    def __init__(
        self,
        store: StateStore,
        client: VodClient,
        *,
        checkpoint_dir: Path,
        options: ExecOptions | None = None,
        reporter: Reporter | None = None,
        uploader: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.client = client
        self.checkpoint_dir = checkpoint_dir
        self.options = options or ExecOptions()
        self.reporter = reporter or Reporter()
        if uploader is None:
            from vodsync.cloud.upload import upload_file as uploader
        self.uploader = uploader
        self.clock = clock
        self.sleep = sleep
        self._result = Result()
        self._upload_bytes = 0  # of the plan being run: what `_part_threads` shares out
        self._lock = threading.Lock()
        self.stopping = threading.Event()  # set by the daemon on SIGTERM: no new work is started

    # ------------------------------------------------------------------ driver

    def run(self, plan: Plan) -> Result:
        self._result = Result()
        actions = list(plan.actions)
        self.recover([c.name for c in actions])
        uploads, urls, registers, updates, deletes, follows = self._partition(actions)
        self._upload_bytes = sum(c.upload_bytes for c in uploads)
        with ThreadPoolExecutor(max_workers=max(1, self.options.concurrency)) as pool:
            futures: list[Future[None]] = []
            # Largest first: a big file started last would upload alone at the end, on one
            # worker's part threads, while the others sit idle (bench/upload_throughput.py).
            for c in sorted(uploads, key=lambda c: -c.upload_bytes):
                futures.append(pool.submit(self._guard, c, self._upload))
            for batch in _chunks(urls, URL_BATCH):
                futures.append(pool.submit(self._guard_batch, batch, self._submit_urls))
            for group in self._register_groups(registers):
                for batch in _chunks(group, REGISTER_BATCH):
                    futures.append(pool.submit(self._guard_batch, batch, self._register))
            for batch in self._update_batches(updates):
                futures.append(pool.submit(self._guard_batch, batch, self._update))
            for f in futures:
                f.result()
        for c in plan.actions:
            if c.action is Action.TOUCH:
                self._touch(c)
        self._delete(deletes)
        touched = {c.name for c in actions}
        self._follow(touched)
        unsettled = self.store.records(statuses=(RecordStatus.INGESTING, RecordStatus.PROCESSING))
        self._result.unsettled = sorted(name for name in unsettled if name in touched)
        return self._result

    def _partition(self, actions: Iterable[Change]) -> tuple[list[Change], ...]:
        uploads: list[Change] = []
        urls: list[Change] = []
        registers: list[Change] = []
        updates: list[Change] = []
        deletes: list[Change] = []
        follows: list[Change] = []
        for c in actions:
            if c.action is Action.DELETE:
                deletes.append(c)
            elif c.action is Action.FOLLOW:
                follows.append(c)
            elif c.action is Action.UPDATE:
                updates.append(c)
            elif c.action is Action.TOUCH:
                continue
            elif c.kind is Kind.URL:
                urls.append(c)
            elif c.kind is Kind.REGISTER:
                registers.append(c)
            else:
                uploads.append(c)
        return uploads, urls, registers, updates, deletes, follows

    def _record_outcome(self, outcome: Outcome) -> None:
        with self._lock:
            self._result.outcomes.append(outcome)
        self.reporter.outcome(outcome)
        (log.info if outcome.ok else log.warning)(
            "%s %s: %s", outcome.action, outcome.name, outcome.message,
            extra={"item": outcome.name, "action": outcome.action, "ok": outcome.ok},
        )

    def _fail(self, name: str, action: str, err: BaseException, *, unusable: bool) -> None:
        message = err.message if isinstance(err, VodsyncError) else f"unexpected error: {type(err).__name__}: {err}"
        rec = self.store.get(name)
        if rec is not None:
            changes: dict[str, Any] = {
                "last_result": f"failed: {message}"[:500],
                "last_error": message[:500],
                "attempts": rec.attempts + 1,
            }
            if unusable and rec.status is not RecordStatus.CREATING:
                changes["status"] = RecordStatus.FAILED
            self.store.put(rec.replace(**changes))
        self._record_outcome(Outcome(name, action, False, message))

    def _guard(self, change: Change, fn: Callable[[Change], None]) -> None:
        if self.stopping.is_set():
            return
        try:
            fn(change)
        except Exception as err:  # noqa: BLE001 - one item's failure must not stop the others
            if not isinstance(err, VodsyncError):
                log.exception("unexpected error on %s", change.name)
            self._fail(change.name, str(change.action), err, unusable=change.action is not Action.UPDATE)

    def _guard_batch(self, batch: Sequence[Change], fn: Callable[[Sequence[Change]], None]) -> None:
        if self.stopping.is_set():
            return
        try:
            fn(batch)
        except Exception as err:  # noqa: BLE001
            if not isinstance(err, VodsyncError):
                log.exception("unexpected error on a batch")
            for c in batch:
                self._fail(c.name, str(c.action), err, unusable=c.action is not Action.UPDATE)

    def _now(self) -> float:
        return self.clock()

    def _save(self, record: Record) -> Record:
        self.store.put(record)
        return record

    # ---------------------------------------------------------------- recovery

    def recover(self, names: Iterable[str] | None = None) -> None:
        """Settle the intents an interrupted run left behind, before anything new is created."""
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
                    self._recover_url(rec, owned_jobs)
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
            created = _iso_to_epoch(media.get("CreationTime"))
            view = _search_view(media)
            if (mid and mid not in owned and (created is None or created >= since)
                    and view.get("Title") == title and _marker_allows(view.get("UserData"), rec.name)):
                orphans.append(mid)
        if orphans:
            self._delete_remote(Kind(rec.kind), orphans)
            log.warning("deleted %d orphaned %s(s) left by an interrupted create of %s: %s",
                        len(orphans), rec.kind, rec.name, ", ".join(orphans))

    def _recover_url(self, rec: Record, owned_jobs: set[str | None]) -> None:
        intent = rec.intent or {}
        since = float(intent.get("at", 0)) - ORPHAN_WINDOW
        # The URL about to be submitted is the intent's: for a replace, rec.source is still the old one.
        url = intent.get("url") or rec.source
        jobs, _ = self.client.get_url_upload_infos_by_urls([url])
        mine = [
            j for j in jobs
            if j.job_id not in owned_jobs and (_iso_to_epoch(j.creation_time) or since) >= since
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

    # ---------------------------------------------------------------- uploads

    def _intent(self, change: Change, **intent: Any) -> Record:
        """Write what is about to be created before the call that creates it."""
        item = change.item
        assert item is not None
        prev = self.store.get(item.name)
        base = prev or Record(name=item.name, kind=str(item.kind), status=RecordStatus.CREATING, source=item.source)
        intent = {"op": "create", "at": self._now(), "title": item.metadata.get("title"), **intent}
        return self._save(base.replace(
            kind=str(item.kind), status=RecordStatus.CREATING, intent=intent, protect=item.protect,
            origin=base.origin if prev else _origin(item),
            reference_id=reference_id(item.name) if item.kind is Kind.VIDEO else None,
        ))

    def _upload(self, change: Change) -> None:
        item = change.item
        assert item is not None and item.local is not None
        rec = self.store.get(item.name)
        if rec is not None and rec.remote_id and (
            rec.status is RecordStatus.DELETING or rec.kind != item.kind
        ):
            # An interrupted delete, or a change of type: the old media goes first, then the
            # item is created afresh. Repeating a delete after a crash is harmless.
            self._delete_remote(Kind(rec.kind), [rec.remote_id])
            rec = self._save(rec.replace(status=RecordStatus.FAILED, remote_id=None, kind=str(item.kind)))
        elif rec is not None and change.reason == "deleted remotely":
            rec = self._save(rec.replace(status=RecordStatus.FAILED, remote_id=None))
        if item.kind is Kind.VIDEO:
            digest = self._upload_video(change, rec)
        else:
            digest = self._upload_other(change, rec)
        done = self.store.get(item.name)
        assert done is not None
        verb = {Action.CREATE: "created", Action.REPLACE: "replaced", Action.RESUME: "resumed"}[change.action]
        self._record_outcome(Outcome(
            item.name, str(change.action), True,
            f"{verb} {done.remote_id} ({item.local.size} bytes, digest {digest[:12]})",
            pending=done.status is RecordStatus.PROCESSING,
        ))

    def _upload_video(self, change: Change, rec: Record | None) -> str:
        item = change.item
        assert item is not None and item.local is not None
        if rec is None or rec.remote_id is None:
            rec = self._intent(change)
            ticket = self._create_video(item)
            rec = self._save(rec.replace(status=RecordStatus.UPLOADING, remote_id=ticket.media_id,
                                         metadata=_meta_json(item), options=dict(item.options)))
        else:
            try:
                ticket = self.client.refresh_upload_video(video_id=rec.remote_id)
            except CloudError as err:
                if err.code != "InvalidVideo.NotFound":
                    raise
                # Deleted behind our back: start over; the deletion freed the ReferenceId.
                rec = self._intent(change)
                ticket = self._create_video(item)
                rec = self._save(rec.replace(metadata=_meta_json(item), options=dict(item.options)))
            rec = self._save(rec.replace(status=RecordStatus.UPLOADING, remote_id=ticket.media_id,
                                         intent={"op": "upload", "at": self._now()}))
        video_id = ticket.media_id
        digest = self._transfer(item, ticket, refresh=lambda: self.client.refresh_upload_video(video_id=video_id))
        fields = changed_fields(item, rec.metadata)
        if fields:
            self.client.update_video_info(video_id, {f: item.metadata[f] for f in fields})
        self._save(rec.replace(
            status=RecordStatus.PROCESSING, remote_status="UploadSucc", content_hash=digest,
            source=item.local.path, size=item.local.size, mtime_ns=item.local.mtime_ns,
            metadata=_meta_json(item), intent=None, protect=item.protect,
            last_result=f"uploaded {item.local.size} bytes", last_error=None, attempts=0, next_attempt_at=None,
        ))
        return digest

    def _create_video(self, item: DesiredItem) -> UploadTicket:
        assert item.local is not None
        return self.client.create_upload_video(
            title=item.metadata.get("title"),
            file_name=os.path.basename(item.local.path),
            file_size=item.local.size,
            description=item.metadata.get("description"),
            tags=tuple(item.metadata.get("tags", ())),
            cate_id=item.metadata.get("cate_id"),
            cover_url=item.metadata.get("cover_url"),
            template_group_id=item.options.get("template_group_id"),
            workflow_id=item.options.get("workflow_id"),
            storage_location=item.options.get("storage_location"),
            app_id=item.options.get("app_id"),
            reference_id=reference_id(item.name),
            user_data=user_data(item.name),
        )

    def _upload_other(self, change: Change, rec: Record | None) -> str:
        """Images and attached media: no refresh exists, so a new credential means new media.

        `serving` is the media the item had before this change (kept until the new one is
        complete, then deleted); `unfinished` is media an earlier run created but could not
        fill (deleted at once: it can never receive its bytes).
        """
        item = change.item
        assert item is not None and item.local is not None
        intent = dict(rec.intent or {}) if rec is not None else {}
        serving = intent.get("supersedes") if intent else (rec.remote_id if rec is not None else None)
        unfinished = rec.remote_id if rec is not None and intent.get("op") == "upload" else None
        if unfinished and unfinished != serving:
            self._delete_remote(item.kind, [unfinished])
        last_err: Exception | None = None
        for _ in range(MAX_FRESH_CREATES):
            rec = self._intent(change, supersedes=serving)
            ticket = self._create_other(item)
            rec = self._save(rec.replace(status=RecordStatus.UPLOADING, remote_id=ticket.media_id,
                                         metadata=_meta_json(item), options=dict(item.options),
                                         intent={"op": "upload", "at": self._now(), "supersedes": serving}))
            try:
                digest = self._transfer(item, ticket, refresh=None)
            except CredentialExpired as err:
                last_err = err
                self._delete_remote(item.kind, [ticket.media_id])
                continue
            self._save(rec.replace(
                status=RecordStatus.READY, remote_status="Normal", content_hash=digest,
                source=item.local.path, size=item.local.size, mtime_ns=item.local.mtime_ns,
                intent=_cleanup_intent(serving, item.kind, ticket.media_id), protect=item.protect,
                last_result=f"uploaded {item.local.size} bytes", last_error=None, attempts=0, next_attempt_at=None,
            ))
            self._cleanup(item.name)
            return digest
        assert last_err is not None
        raise last_err

    def _create_other(self, item: DesiredItem) -> UploadTicket:
        assert item.local is not None
        ext = os.path.splitext(item.local.path)[1].lstrip(".").lower()
        common = {
            "description": item.metadata.get("description"),
            "tags": tuple(item.metadata.get("tags", ())),
            "cate_id": item.metadata.get("cate_id"),
            "storage_location": item.options.get("storage_location"),
            "app_id": item.options.get("app_id"),
            "user_data": user_data(item.name),
        }
        if item.kind is Kind.IMAGE:
            return self.client.create_upload_image(
                image_type=item.options.get("image_type", "default"), image_ext=ext,
                title=item.metadata.get("title"), original_file_name=os.path.basename(item.local.path), **common,
            )
        return self.client.create_upload_attached_media(
            business_type=item.options["business_type"], media_ext=ext, title=item.metadata.get("title"),
            file_name=os.path.basename(item.local.path), file_size=item.local.size, **common,
        )

    def _part_threads(self, size: int) -> int:
        """Part threads for one file: its share of the run's upload streams (concurrency x
        upload_threads) by bytes, at least `upload_threads`.

        With the same threads for every file, a 1 GiB file among 128 MiB ones ends the run
        alone on 4 streams while the other workers' streams sit idle; over a WAN, where each
        stream is capped, that tail is most of the run (bench/upload_throughput.py).
        """
        base = max(1, self.options.upload_threads)
        streams = base * max(1, self.options.concurrency)
        if self._upload_bytes <= 0:
            return base
        return max(base, min(streams, round(streams * size / self._upload_bytes)))

    def _transfer(self, item: DesiredItem, ticket: UploadTicket,
                  refresh: Callable[[], UploadTicket] | None) -> str:
        """Upload the file; its content identity is the CRC-64 the uploader checked against OSS's."""
        assert item.local is not None
        total = item.local.size
        self.reporter.upload_started(item.name, total)
        try:
            result = self.uploader(
                ticket, item.local.path, refresh=refresh,
                checkpoint_dir=self.checkpoint_dir, part_size=self.options.part_size,
                multipart_threshold=self.options.multipart_threshold, threads=self._part_threads(total),
                progress=lambda done, tot: self.reporter.upload_progress(item.name, done, tot),
            )
        finally:
            self.reporter.upload_finished(item.name)
        with self._lock:
            self._result.uploaded_bytes += total
        return digest_of(result.crc64)

    # --------------------------------------------------------------- URL ingest

    def _submit_urls(self, batch: Sequence[Change]) -> None:
        todo: list[Change] = []
        for c in batch:
            rec = self.store.get(c.name)
            if rec is not None and rec.status is RecordStatus.INGESTING:
                continue  # adopted by recovery
            old, old_kind = _superseded(c, rec)
            if rec is not None and rec.remote_id and c.action is Action.CREATE:
                # Deleted remotely: forget the dead ID, so a failed ingest is retried (RESUME).
                self._save(rec.replace(remote_id=None))
            assert c.item is not None
            self._intent(c, supersedes=old, supersedes_kind=old_kind, url=c.item.source,
                         metadata=_meta_json(c.item), options=dict(c.item.options))
            todo.append(c)
        if not todo:
            return
        entries = [_url_entry(c.item) for c in todo if c.item is not None]
        jobs = self.client.upload_media_by_url(entries)
        with self.store.transaction():
            for c in todo:
                assert c.item is not None
                rec = self.store.get(c.name)
                assert rec is not None
                job = jobs.get(c.item.source)
                if job is None:
                    raise CloudError("MissingJob", f"UploadMediaByURL returned no job for {c.item.source}")
                # What the record said before: a failed ingest puts it back, so the next plan retries.
                previous = {"previous_source": rec.source, "previous_metadata": dict(rec.metadata)}
                self._save(rec.replace(status=RecordStatus.INGESTING, job_id=job, source=c.item.source,
                                       metadata=_meta_json(c.item), options=dict(c.item.options),
                                       intent={**(rec.intent or {}), "op": "ingest", **previous},
                                       protect=c.item.protect))
        for c in todo:
            self._record_outcome(Outcome(c.name, str(c.action), True, f"submitted URL ingest {jobs[c.item.source]}",
                                         pending=True))

    def _follow(self, names: set[str]) -> None:
        """Follow URL jobs and transcoding until they settle or the wait runs out."""
        deadline = self._now() + self.options.wait
        first = True
        delay = min(0.25, self.options.poll_interval)  # quick first looks, then back off
        while True:
            records = self.store.records(
                statuses=(RecordStatus.INGESTING, RecordStatus.DELETING, RecordStatus.PROCESSING))
            # A pruned item whose URL job could not be cancelled is followed too: its video is
            # deleted when the job delivers it.
            ingesting = [r for r in records.values()
                         if r.status in (RecordStatus.INGESTING, RecordStatus.DELETING) and r.job_id]
            processing = [r for r in records.values() if r.status is RecordStatus.PROCESSING and r.remote_id]
            if not ingesting and not processing:
                return
            if not first and (self._now() >= deadline or self.stopping.is_set()):
                for r in ingesting:
                    if r.name in names:
                        self._record_outcome(Outcome(r.name, "follow", True, f"still ingesting (job {r.job_id})",
                                                     pending=True))
                return
            if not first:
                self.sleep(delay)
                delay = min(delay * 2, self.options.poll_interval)
            first = False
            try:
                self._poll_jobs(ingesting, names)
                self._poll_processing(processing)
            except VodsyncError as err:
                log.warning("could not poll VOD for progress: %s", err.message)
                if self._now() >= deadline:
                    return

    def _poll_jobs(self, ingesting: list[Record], names: set[str]) -> None:
        by_job = {r.job_id: r for r in ingesting}
        for batch in _chunks(list(by_job), URL_QUERY_BATCH):
            jobs, missing = self.client.get_url_upload_infos(batch)
            for job in jobs:
                rec = by_job[job.job_id]
                if rec.status is RecordStatus.DELETING:
                    if job.terminal:
                        self._delete_remote(Kind.URL, [job.media_id] if job.media_id else [])
                        self.store.delete(rec.name)
                        self._record_outcome(Outcome(rec.name, "delete", True,
                                                     f"deleted {job.media_id or '(ingest never delivered)'}"))
                    continue
                if not job.terminal:
                    if job.status != rec.remote_status:
                        self._save(rec.replace(remote_status=job.status))
                    continue
                if job.succeeded and job.media_id:
                    intent = rec.intent or {}
                    self._save(rec.replace(
                        status=RecordStatus.PROCESSING, remote_id=job.media_id, job_id=None,
                        remote_status=job.status, last_result="ingested", last_error=None, attempts=0,
                        intent=_cleanup_intent(intent.get("supersedes"), intent.get("supersedes_kind"), job.media_id),
                    ))
                    self._cleanup(rec.name)
                    self._record_outcome(Outcome(rec.name, "ingest", True, f"ingested as {job.media_id}"))
                else:
                    why = f"{job.status}: {job.error_code or ''} {job.error_message or ''}".strip()
                    self._save(_ingest_failed(rec).replace(
                        status=RecordStatus.FAILED, job_id=None, remote_status=job.status,
                        last_result=f"failed: {why}", last_error=why, attempts=rec.attempts + 1))
                    self._record_outcome(Outcome(rec.name, "ingest", False, why))
            for job_id in missing:
                rec = by_job[job_id]
                if rec.status is RecordStatus.DELETING:
                    self.store.delete(rec.name)
                    continue
                self._save(_ingest_failed(rec).replace(status=RecordStatus.FAILED, job_id=None,
                                                       last_error=f"URL job {job_id} no longer exists"))
                self._record_outcome(Outcome(rec.name, "ingest", False, f"URL job {job_id} no longer exists"))

    def _poll_processing(self, processing: list[Record]) -> None:
        by_id = {r.remote_id: r for r in processing if Kind(r.kind).remote_is_video}
        for batch in _chunks(list(by_id), VIDEO_BATCH):
            found, missing = self.client.get_video_infos(batch)
            for vid, media in found.items():
                rec = by_id[vid]
                if media.status == "Normal":
                    self._save(rec.replace(status=RecordStatus.READY, remote_status="Normal"))
                elif media.status in ("TranscodeFail", "UploadFail", "Blocked"):
                    self._save(rec.replace(status=RecordStatus.FAILED, remote_status=media.status,
                                           last_error=f"VOD status {media.status}"))
                    self._record_outcome(Outcome(rec.name, "transcode", False, f"VOD status {media.status}"))
                elif media.status != rec.remote_status:
                    self._save(rec.replace(remote_status=media.status))
            for vid in missing:
                rec = by_id[vid]
                self._save(rec.replace(status=RecordStatus.FAILED, remote_id=None, last_error="deleted remotely"))
        for r in processing:
            if not Kind(r.kind).remote_is_video:
                self._save(r.replace(status=RecordStatus.READY))

    # ------------------------------------------------------------ registration

    def _register_groups(self, changes: list[Change]) -> list[list[Change]]:
        groups: dict[tuple[Any, Any], list[Change]] = {}
        for c in changes:
            opts = c.item.options if c.item else {}
            groups.setdefault((opts.get("template_group_id"), opts.get("workflow_id")), []).append(c)
        return list(groups.values())

    def _register(self, batch: Sequence[Change]) -> None:
        olds: dict[str, tuple[str, str]] = {}
        for c in batch:
            rec = self.store.get(c.name)
            old, old_kind = _superseded(c, rec)
            if old:
                olds[c.name] = (old_kind or c.kind, old)
            elif rec is not None and rec.remote_id and c.action is Action.CREATE:
                # Deleted remotely: forget the dead ID, so a failed registration is retried (RESUME).
                self._save(rec.replace(remote_id=None))
            self._intent(c, supersedes=old, supersedes_kind=old_kind)
        first = batch[0].item
        assert first is not None
        registered, failed = self.client.register_media(
            [_register_entry(c.item) for c in batch if c.item is not None],
            template_group_id=first.options.get("template_group_id"),
            workflow_id=first.options.get("workflow_id"),
        )
        by_url = {r.file_url: r for r in registered}
        failed_set = set(failed)
        for c in batch:
            assert c.item is not None
            rec = self.store.get(c.name)
            assert rec is not None
            got = by_url.get(c.item.source)
            if got is None:
                why = ("the object does not exist or is not a media file" if c.item.source in failed_set
                       else "RegisterMedia did not return it")
                self._save(rec.replace(status=RecordStatus.FAILED, last_error=why, last_result=f"failed: {why}",
                                       attempts=rec.attempts + 1))
                self._record_outcome(Outcome(c.name, str(c.action), False, f"{c.item.source}: {why}"))
                continue
            old_kind, old_id = olds.get(c.name, (None, None))
            self._save(rec.replace(
                status=RecordStatus.PROCESSING, remote_id=got.media_id, source=c.item.source,
                metadata=_meta_json(c.item), options=dict(c.item.options), last_result="registered",
                last_error=None, attempts=0, intent=_cleanup_intent(old_id, old_kind, got.media_id),
            ))
            if not got.new_register:
                # Registered before (by us or someone): make its metadata match the manifest.
                self.client.update_video_info(got.media_id, dict(c.item.metadata))
            self._cleanup(c.name)
            self._record_outcome(Outcome(c.name, str(c.action), True, f"registered {got.media_id}"))

    # ------------------------------------------------------------------ updates

    def _update_batches(self, updates: list[Change]) -> list[list[Change]]:
        videos = [[c] for c in updates if c.kind.remote_is_video]
        images = [c for c in updates if c.kind is Kind.IMAGE]
        attached = [c for c in updates if c.kind is Kind.ATTACHED]
        return videos + [list(b) for b in _chunks(images, UPDATE_BATCH)] + [list(b) for b in _chunks(attached, UPDATE_BATCH)]

    def _update(self, batch: Sequence[Change]) -> None:
        live: list[tuple[Change, Record]] = []
        for c in batch:
            rec = self.store.get(c.name)
            if rec is None or not rec.remote_id:
                raise VodsyncError(f"{c.name} has no remote media to update")
            live.append((c, rec))
        kind = batch[0].kind
        payload = [(rec.remote_id, {f: c.item.metadata[f] for f in c.fields}) for c, rec in live if c.item]
        missing: list[str] = []
        if kind.remote_is_video:
            try:
                self.client.update_video_info(*payload[0])
            except CloudError as err:
                if err.code != "InvalidVideo.NotFound":
                    raise
                missing = [payload[0][0]]
        elif kind is Kind.IMAGE:
            missing = list(self.client.update_image_infos(payload) or [])
        else:
            missing = list(self.client.update_attached_media_infos(payload) or [])
        for c, rec in live:
            assert c.item is not None
            if rec.remote_id in missing:
                self._save(rec.replace(status=RecordStatus.FAILED, remote_id=None,
                                       last_error="deleted remotely", last_result="failed: deleted remotely"))
                self._record_outcome(Outcome(c.name, "update", False, "the media was deleted remotely; "
                                             "the next run creates it again"))
                continue
            merged = {**rec.metadata, **{f: _meta_json(c.item)[f] for f in c.fields}}
            self._save(rec.replace(metadata=merged, protect=c.item.protect,
                                   last_result=f"updated {', '.join(c.fields)}", last_error=None))
            self._record_outcome(Outcome(c.name, "update", True, f"updated {', '.join(c.fields)}"))

    # ---------------------------------------------------------- touch, delete

    def _touch(self, c: Change) -> None:
        rec = self.store.get(c.name)
        if rec is None or c.item is None:
            return
        changes: dict[str, Any] = {"protect": c.item.protect}
        if c.item.local is not None:
            changes.update(source=c.item.local.path, size=c.item.local.size, mtime_ns=c.item.local.mtime_ns)
            if c.content_hash:
                changes["content_hash"] = c.content_hash
        self._save(rec.replace(**changes))

    def _delete(self, deletes: list[Change]) -> None:
        if not deletes or self.stopping.is_set():
            return
        by_kind: dict[Kind, list[Record]] = {}
        with self.store.transaction():
            for c in deletes:
                rec = self.store.get(c.name)
                if rec is None or rec.protect:
                    continue
                self._save(rec.replace(status=RecordStatus.DELETING))
                by_kind.setdefault(Kind(rec.kind), []).append(rec)
        for kind, recs in by_kind.items():
            for batch in _chunks(recs, VIDEO_BATCH):
                ids = [r.remote_id for r in batch if r.remote_id]
                try:
                    if ids:
                        self._delete_remote(kind, ids)
                except VodsyncError as err:
                    for r in batch:
                        self._fail(r.name, "delete", err, unusable=False)
                    continue
                for r in batch:
                    if r.job_id and not r.remote_id and not self._drop_ingest(r):
                        # The record stays DELETING with its job; following the job finishes the delete.
                        self._record_outcome(Outcome(r.name, "delete", True, f"URL job {r.job_id} is already "
                                                     "downloading; its video is deleted when it arrives",
                                                     pending=True))
                        continue
                    self.store.delete(r.name)
                    self._record_outcome(Outcome(r.name, "delete", True, f"deleted {r.remote_id or '(never created)'}"))

    def _drop_ingest(self, rec: Record) -> bool:
        """Delete of an item whose URL job has not delivered: cancel it, or delete what it made.

        Forgetting the record alone would let the job create a video that nobody owns.
        Returns False while the job is still running and cannot be cancelled.
        """
        assert rec.job_id is not None
        canceled, missing = self.client.cancel_url_upload_jobs([rec.job_id])
        if rec.job_id in canceled or rec.job_id in missing:
            return True
        jobs, _ = self.client.get_url_upload_infos([rec.job_id])
        if not jobs:
            return True
        if not jobs[0].terminal:
            return False
        if jobs[0].media_id:
            self._delete_remote(Kind.URL, [jobs[0].media_id])
        return True

    def _cleanup(self, name: str) -> None:
        """Delete the media a finished replace superseded, then forget the intent."""
        rec = self.store.get(name)
        if rec is None or not rec.intent or rec.intent.get("op") != "cleanup":
            return
        self._delete_remote(Kind(rec.intent.get("kind") or rec.kind), [rec.intent["supersedes"]])
        self._save(rec.replace(intent=None))

    def _delete_remote(self, kind: Kind, ids: Sequence[str]) -> None:
        ids = [i for i in ids if i]
        if not ids:
            return
        if kind.remote_is_video:
            self.client.delete_videos(ids)
        elif kind is Kind.IMAGE:
            self.client.delete_images(ids)
        else:
            self.client.delete_attached_media(ids)


def _ingest_failed(rec: Record) -> Record:
    """A failed URL ingest leaves the record as it was before the submission (source, metadata).

    Otherwise a failed replace would look done: the record would name the new URL while
    the old media still serves, and the next plan would see nothing to do.
    """
    intent = rec.intent or {}
    if "previous_source" not in intent:
        return rec
    return rec.replace(source=intent["previous_source"], metadata=intent.get("previous_metadata", rec.metadata),
                       intent=None)


def _superseded(change: Change, rec: Record | None) -> tuple[str | None, str | None]:
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


def _cleanup_intent(old_id: str | None, old_kind: str | None, new_id: str) -> dict[str, Any] | None:
    if not old_id or old_id == new_id:
        return None
    return {"op": "cleanup", "supersedes": old_id, "kind": old_kind}


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


def _origin(item: DesiredItem) -> str:
    """Drop-folder items are named `drop/<folder>/<digest>`; their records are never pruned."""
    if item.name.startswith("drop/"):
        return "drop:" + item.name.split("/")[1]
    return "manifest"


def _url_entry(item: DesiredItem) -> UrlUploadEntry:
    m, o = item.metadata, item.options
    return UrlUploadEntry(
        url=item.source, title=m.get("title"), description=m.get("description"), tags=tuple(m.get("tags", ())),
        cate_id=m.get("cate_id"), cover_url=m.get("cover_url"), template_group_id=o.get("template_group_id"),
        workflow_id=o.get("workflow_id"), file_extension=o.get("file_extension"),
    )


def _register_entry(item: DesiredItem) -> RegisterEntry:
    m = item.metadata
    return RegisterEntry(
        file_url=item.source, title=m.get("title"), description=m.get("description"),
        tags=tuple(m.get("tags", ())), cate_id=m.get("cate_id"), cover_url=m.get("cover_url"),
    )
