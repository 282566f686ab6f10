"""Changes to media that already exist: metadata updates, bookkeeping touches and deletions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from vodsync.desired.items import Kind
from vodsync.engine.context import RunContext
from vodsync.engine.diff import ON_DELETE, Change, deletes_users_source
from vodsync.engine.execution import (
    UPDATE_BATCH,
    VIDEO_BATCH,
    Outcome,
    chunks,
    log,
    meta_json,
)
from vodsync.engine.ownership import delete_media
from vodsync.errors import CloudError, VodsyncError
from vodsync.state.store import Record, RecordStatus


@dataclass(frozen=True)
class Edits:
    """The worker of updates in batches, touches, and deletes (only what the plan allows)."""

    ctx: RunContext

    def update_batches(self, updates: list[Change]) -> list[list[Change]]:
        videos = [[c] for c in updates if c.kind.remote_is_video]
        images = [c for c in updates if c.kind is Kind.IMAGE]
        attached = [c for c in updates if c.kind is Kind.ATTACHED]
        return videos + [list(b) for b in chunks(images, UPDATE_BATCH)] + [list(b) for b in chunks(attached, UPDATE_BATCH)]

    def update(self, batch: Sequence[Change]) -> Iterator[Outcome]:
        live: list[tuple[Change, Record]] = []
        for c in batch:
            rec = self.ctx.store.get(c.name)
            if rec is None or not rec.remote_id:
                raise VodsyncError(f"{c.name} has no remote media to update")
            live.append((c, rec))
        kind = batch[0].kind
        payload = [(rec.remote_id, {f: c.item.metadata[f] for f in c.fields}) for c, rec in live if c.item]
        missing: list[str] = []
        if kind.remote_is_video:
            try:
                self.ctx.client.update_video_info(*payload[0])
            except CloudError as err:
                if err.code != "InvalidVideo.NotFound":
                    raise
                missing = [payload[0][0]]
        elif kind is Kind.IMAGE:
            missing = list(self.ctx.client.update_image_infos(payload) or [])
        else:
            missing = list(self.ctx.client.update_attached_media_infos(payload) or [])
        for c, rec in live:
            assert c.item is not None
            if rec.remote_id in missing:
                self.ctx.save(rec.failed("deleted remotely", remote_id=None))
                yield Outcome(c.name, "update", False, "the media was deleted remotely; "
                              "the next run creates it again")
                continue
            merged = {**rec.metadata, **{f: meta_json(c.item)[f] for f in c.fields}}
            self.ctx.save(rec.replace(metadata=merged, protect=c.item.protect,
                                      last_result=f"updated {', '.join(c.fields)}", last_error=None))
            yield Outcome(c.name, "update", True, f"updated {', '.join(c.fields)}")

    def touch(self, c: Change) -> None:
        rec = self.ctx.store.get(c.name)
        if rec is None or c.item is None:
            return
        changes: dict[str, Any] = {"protect": c.item.protect}
        if rec.options.get(ON_DELETE) != c.item.options.get(ON_DELETE):
            kept = {k: v for k, v in rec.options.items() if k != ON_DELETE}
            changes["options"] = {**kept, **{k: v for k, v in c.item.options.items() if k == ON_DELETE}}
        if c.item.local is not None:
            local = c.item.local
            changes.update(source=local.path, size=local.total_size, mtime_ns=local.newest_mtime_ns)
            if c.content_hash:
                changes["content_hash"] = c.content_hash
        self.ctx.save(rec.replace(**changes))

    def deleting(self, deletes: Sequence[Change]) -> list[tuple[Kind, Sequence[Record]]]:
        """Record the intent to delete (`deleting`) for each record the plan may delete (not a
        protected one, not one whose delete would take the user's own object): in batches by kind."""
        by_kind: dict[Kind, list[Record]] = {}
        with self.ctx.store.transaction():
            for c in deletes:
                rec = self.ctx.store.get(c.name)
                if rec is None or rec.protect or deletes_users_source(rec):
                    continue
                self.ctx.save(rec.replace(status=RecordStatus.DELETING))
                by_kind.setdefault(rec.kind, []).append(rec)
        return [(kind, batch) for kind, recs in by_kind.items() for batch in chunks(recs, VIDEO_BATCH)]

    def delete(self, kind: Kind, batch: Sequence[Record]) -> Iterator[Outcome]:
        """Delete one batch of `deleting` records' media (the records as they were before)."""
        ids = [r.remote_id for r in batch if r.remote_id]
        self._abort_interrupted_uploads(kind, batch)
        if ids:
            delete_media(self.ctx.client, kind, ids)
        for r in batch:
            if r.job_id and not r.remote_id and not self._drop_ingest(r):
                # The record stays DELETING with its job; following the job finishes the delete.
                yield Outcome(r.name, "delete", True, f"URL job {r.job_id} is already downloading; its video "
                              "is deleted when it arrives", pending=True)
                continue
            self.ctx.store.delete(r.name)
            yield Outcome(r.name, "delete", True, f"deleted {r.remote_id or '(never created)'}")

    def _abort_interrupted_uploads(self, kind: Kind, recs: Sequence[Record]) -> None:
        """Before their media goes: abort the multipart uploads that interrupted runs left for these
        records (their checkpoints name them), which nothing could abort once the media is deleted.

        A video's RefreshUploadVideo gives a credential for its key. VOD has no such call for an image
        or attached media, so those uploads stay, and the log says so."""
        from vodsync.cloud.upload import abort_checkpointed, list_checkpoints

        checkpoints, _ = list_checkpoints(self.ctx.checkpoint_dir)
        by_file: dict[str, list[Any]] = {}
        for cp in checkpoints:
            by_file.setdefault(cp.file_path, []).append(cp)
        for rec in recs:
            mine = by_file.get(rec.source or "", [])
            if not mine or not rec.remote_id:
                continue
            if not kind.remote_is_video:
                log.warning("cannot abort the interrupted upload of %s (%s): VOD issues no new upload credential "
                            "for an image or attached media; `vodsync gc` forgets it", rec.name, rec.remote_id,
                            extra={"item": rec.name})
                continue
            try:
                ticket = self.ctx.client.refresh_upload_video(video_id=rec.remote_id)
            except CloudError as err:
                if err.code != "InvalidVideo.NotFound":
                    raise  # the delete waits: once the video is gone, nothing could abort the upload
                continue  # already gone: `vodsync gc` reports the upload and why it stays
            for cp in mine:
                if (cp.bucket, cp.key) == (ticket.address.bucket, ticket.address.key):
                    abort_checkpointed(ticket, cp)
                    log.info("aborted the interrupted upload %s of %s", cp.upload_id, rec.name,
                             extra={"item": rec.name})

    def _drop_ingest(self, rec: Record) -> bool:
        """Delete of an item whose URL job has not delivered: cancel it, or delete what it made.

        Forgetting the record alone would let the job create a video that nobody owns.
        Returns False while the job is still running and cannot be cancelled.
        """
        assert rec.job_id is not None
        canceled, missing = self.ctx.client.cancel_url_upload_jobs([rec.job_id])
        if rec.job_id in canceled or rec.job_id in missing:
            return True
        jobs, _ = self.ctx.client.get_url_upload_infos([rec.job_id])
        if not jobs:
            return True
        if not jobs[0].terminal:
            return False
        if jobs[0].media_id:
            delete_media(self.ctx.client, Kind.URL, [jobs[0].media_id])
        return True
