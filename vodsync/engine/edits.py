"""Changes to media that already exist: metadata updates, bookkeeping touches and deletions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vodsync.desired.items import Kind
from vodsync.engine.diff import ON_DELETE, Change, deletes_users_source
from vodsync.engine.execution import (
    UPDATE_BATCH,
    VIDEO_BATCH,
    Outcome,
    chunks,
    meta_json,
)
from vodsync.errors import CloudError, VodsyncError
from vodsync.state.store import Record, RecordStatus


class Edits:
    """Part of `Executor`: updates in batches, touches, and deletes (only what the plan allows)."""

    # ------------------------------------------------------------------ updates

    def _update_batches(self, updates: list[Change]) -> list[list[Change]]:
        videos = [[c] for c in updates if c.kind.remote_is_video]
        images = [c for c in updates if c.kind is Kind.IMAGE]
        attached = [c for c in updates if c.kind is Kind.ATTACHED]
        return videos + [list(b) for b in chunks(images, UPDATE_BATCH)] + [list(b) for b in chunks(attached, UPDATE_BATCH)]

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
            merged = {**rec.metadata, **{f: meta_json(c.item)[f] for f in c.fields}}
            self._save(rec.replace(metadata=merged, protect=c.item.protect,
                                   last_result=f"updated {', '.join(c.fields)}", last_error=None))
            self._record_outcome(Outcome(c.name, "update", True, f"updated {', '.join(c.fields)}"))

    # ---------------------------------------------------------- touch, delete

    def _touch(self, c: Change) -> None:
        rec = self.store.get(c.name)
        if rec is None or c.item is None:
            return
        changes: dict[str, Any] = {"protect": c.item.protect}
        if rec.options.get(ON_DELETE) != c.item.options.get(ON_DELETE):
            kept = {k: v for k, v in rec.options.items() if k != ON_DELETE}
            changes["options"] = {**kept, **{k: v for k, v in c.item.options.items() if k == ON_DELETE}}
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
                if rec is None or rec.protect or deletes_users_source(rec):
                    continue
                self._save(rec.replace(status=RecordStatus.DELETING))
                by_kind.setdefault(Kind(rec.kind), []).append(rec)
        for kind, recs in by_kind.items():
            for batch in chunks(recs, VIDEO_BATCH):
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
