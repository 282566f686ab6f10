"""Local files to VOD: create the media (intent first), move the bytes to OSS, record the result."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from vodsync.checksum import digest_of
from vodsync.cloud.types import UploadTicket
from vodsync.desired.items import DesiredItem, Kind, LocalFile
from vodsync.engine.context import RunContext
from vodsync.engine.diff import Action, Change, changed_fields
from vodsync.engine.execution import (
    Outcome,
    cleanup_intent,
    meta_json,
)
from vodsync.engine.ownership import delete_media
from vodsync.errors import CloudError, CredentialExpired, UploadInterrupted
from vodsync.sourcefile import Planned, SourceFile
from vodsync.state.records import Intent, MediaRef, Op
from vodsync.state.store import Record, RecordStatus

MAX_FRESH_CREATES = 3  # images/attached: new media after an expired credential, at most


@dataclass(frozen=True)
class ItemFiles:
    """An item's local files, each opened once and checked to be the file planned: the file
    itself (an HLS playlist, for one) and its segments, with the names they go up under."""

    main: SourceFile
    segments: tuple[tuple[str, SourceFile], ...] = ()

    @classmethod
    def open(cls, local: LocalFile, stack: contextlib.ExitStack) -> ItemFiles:
        def opened(f: LocalFile) -> SourceFile:
            return stack.enter_context(SourceFile.open(f.path, Planned(f.size, f.mtime_ns, f.dev, f.ino)))

        return cls(opened(local), tuple((s.name, opened(s.file)) for s in local.segments))

    @property
    def total_size(self) -> int:
        return self.main.size + sum(f.size for _, f in self.segments)


@dataclass(frozen=True)
class Uploads:
    """The worker of creates, replaces and resumes of videos, images and attached media."""

    ctx: RunContext

    def upload(self, change: Change) -> Iterator[Outcome]:
        item = change.item
        assert item is not None and item.local is not None
        # Opened once, before anything is created: the very files planned, or the item fails here
        # (vodsync.sourcefile). Everything below reads them through these descriptors only.
        with contextlib.ExitStack() as stack:
            yield self._upload_source(change, ItemFiles.open(item.local, stack))

    def _upload_source(self, change: Change, source: ItemFiles) -> Outcome:
        item = change.item
        assert item is not None and item.local is not None
        rec = self.ctx.store.get(item.name)
        if rec is not None and rec.remote_id and (rec.status is RecordStatus.DELETING or rec.kind != item.kind):
            # An interrupted delete, or a change of type: the old media goes first, then the
            # item is created afresh. Repeating a delete after a crash is harmless.
            delete_media(self.ctx.client, rec.kind, [rec.remote_id])
            rec = self.ctx.save(rec.lost(kind=item.kind))
        elif rec is not None and change.reason == "deleted remotely":
            rec = self.ctx.save(rec.lost())
        upload = self._upload_video if item.kind is Kind.VIDEO else self._upload_other
        done = upload(change, rec, source)
        verb = {Action.CREATE: "created", Action.REPLACE: "replaced", Action.RESUME: "resumed"}[change.action]
        return Outcome(
            item.name, str(change.action), True,
            f"{verb} {done.remote_id} ({item.local.total_size} bytes, digest {(done.content_hash or '')[:12]})",
            pending=done.status is RecordStatus.PROCESSING,
        )

    def _upload_video(self, change: Change, rec: Record | None, source: ItemFiles) -> Record:
        """Create (or find again) the video, upload its bytes, and return the record saying so."""
        item = change.item
        assert item is not None and item.local is not None
        if rec is None or rec.remote_id is None:
            rec = self.ctx.intend(change)
            ticket = self._create_video(item)
            rec = self.ctx.save(rec.created(ticket.media_id, rec.intent, metadata=meta_json(item),
                                            options=dict(item.options)))
        else:
            try:
                ticket = self.ctx.client.refresh_upload_video(video_id=rec.remote_id)
            except CloudError as err:
                if err.code != "InvalidVideo.NotFound":
                    raise
                # Deleted behind our back: start over; the deletion freed the ReferenceId.
                rec = self.ctx.intend(change)
                ticket = self._create_video(item)
                rec = self.ctx.save(rec.replace(metadata=meta_json(item), options=dict(item.options)))
            rec = self.ctx.save(rec.created(ticket.media_id, Intent(Op.UPLOAD, at=self.ctx.now())))
        video_id = ticket.media_id
        digest = self._transfer(item, source, ticket,
                                refresh=lambda: self.ctx.client.refresh_upload_video(video_id=video_id))
        fields = changed_fields(item, rec.metadata)
        if fields:
            self.ctx.client.update_video_info(video_id, {f: item.metadata[f] for f in fields})
        return self.ctx.save(rec.uploaded(
            RecordStatus.PROCESSING, remote_status="UploadSucc", metadata=meta_json(item), intent=None,
            **_bytes_in(item, digest),
        ))

    def _create_video(self, item: DesiredItem) -> UploadTicket:
        assert item.local is not None
        return self.ctx.client.create_upload_video(
            file_name=os.path.basename(item.local.path), file_size=item.local.total_size,
            cover_url=item.metadata.get("cover_url"), template_group_id=item.options.get("template_group_id"),
            workflow_id=item.options.get("workflow_id"), reference_id=self.ctx.namespace.reference_id(item.name),
            **self._created_with(item),
        )

    def _created_with(self, item: DesiredItem) -> dict[str, Any]:
        """What every Create* of an item is given: its metadata, where it is stored, our marker."""
        m, o = item.metadata, item.options
        return {
            "title": m.get("title"), "description": m.get("description"), "tags": tuple(m.get("tags", ())),
            "cate_id": m.get("cate_id"), "storage_location": o.get("storage_location"), "app_id": o.get("app_id"),
            "user_data": self.ctx.namespace.user_data(item.name),
        }

    def _upload_other(self, change: Change, rec: Record | None, source: ItemFiles) -> Record:
        """Images and attached media: no refresh exists, so a new credential means new media.

        `serving` is the media the item had before this change (kept until the new one is
        complete, then deleted); `unfinished` is media an earlier run created but could not
        fill (deleted at once: it can never receive its bytes).
        """
        item = change.item
        assert item is not None and item.local is not None
        intent = rec.intent if rec is not None else None
        owned = MediaRef(rec.remote_id, item.kind) if rec is not None and rec.remote_id else None
        serving = intent.supersedes if intent is not None else owned
        unfinished = rec.remote_id if rec is not None and intent is not None and intent.op is Op.UPLOAD else None
        if unfinished and unfinished != (serving and serving.media_id):
            delete_media(self.ctx.client, item.kind, [unfinished])
        last_err: Exception | None = None
        for _ in range(MAX_FRESH_CREATES):
            rec = self.ctx.intend(change, supersedes=serving)
            ticket = self._create_other(item)
            uploading = Intent(Op.UPLOAD, at=self.ctx.now(), supersedes=serving)
            rec = self.ctx.save(rec.created(ticket.media_id, uploading, metadata=meta_json(item),
                                            options=dict(item.options)))
            try:
                digest = self._transfer(item, source, ticket, refresh=None)
            except CredentialExpired as err:
                last_err = err
                delete_media(self.ctx.client, item.kind, [ticket.media_id])
                continue
            done = self.ctx.save(rec.uploaded(
                RecordStatus.READY, remote_status="Normal", intent=cleanup_intent(serving, ticket.media_id),
                **_bytes_in(item, digest),
            ))
            self.ctx.clean_up(item.name)
            return done
        assert last_err is not None
        raise last_err

    def _create_other(self, item: DesiredItem) -> UploadTicket:
        assert item.local is not None
        ext = os.path.splitext(item.local.path)[1].lstrip(".").lower()
        name, common = os.path.basename(item.local.path), self._created_with(item)
        if item.kind is Kind.IMAGE:
            return self.ctx.client.create_upload_image(image_type=item.options.get("image_type", "default"),
                                                       image_ext=ext, original_file_name=name, **common)
        return self.ctx.client.create_upload_attached_media(business_type=item.options["business_type"],
                                                            media_ext=ext, file_name=name, file_size=item.local.size,
                                                            **common)

    def _part_threads(self, size: int) -> int:
        """Part threads for one file: its share of the run's upload streams (concurrency x
        upload_threads) by bytes, at least `upload_threads`.

        With the same threads for every file, a 1 GiB file among 128 MiB ones ends the run
        alone on 4 streams while the other workers' streams sit idle; over a WAN, where each
        stream is capped, that tail is most of the run (bench/upload_throughput.py).
        """
        base = max(1, self.ctx.options.upload_threads)
        streams = base * max(1, self.ctx.options.concurrency)
        planned = self.ctx.tally.planned
        if planned <= 0:
            return base
        return max(base, min(streams, round(streams * size / planned)))

    def _transfer(self, item: DesiredItem, files: ItemFiles, ticket: UploadTicket,
                  refresh: Callable[[], UploadTicket] | None) -> str:
        """Upload the files from their checked descriptors: an HLS playlist's segments first, each
        to `ObjectPrefix + name`, then the file itself at the ticket's key. The content identity
        is the CRC-64 the uploader read from the main descriptor (and checked against OSS's),
        continued over the segments' descriptors. Progress and the run's byte count are net of
        what a resumed upload found already in OSS."""
        total = files.total_size
        self.ctx.reporter.upload_started(item.name, total)
        began = time.monotonic()
        sent = 0  # bytes this run sent for the files done so far
        resumed = 0  # bytes those files already had in OSS
        left = total  # bytes of the files not done yet

        def send(source: SourceFile, target: UploadTicket, again: Callable[[], UploadTicket] | None) -> int:
            nonlocal sent, resumed, left
            # A shared state keeps the multipart upload's identity, so another host can resume it.
            shared: dict[str, Any] = {"shared": self.ctx.store} if self.ctx.store.shared else {}
            after = left - source.size  # bytes of the files after this one
            result = self.ctx.uploader(
                target, source, refresh=again,
                checkpoint_dir=self.ctx.checkpoint_dir, part_size=self.ctx.options.part_size,
                multipart_threshold=self.ctx.options.multipart_threshold, threads=self._part_threads(source.size),
                progress=lambda done, to_send: self.ctx.reporter.upload_progress(
                    item.name, sent + done, sent + to_send + after),
                stop=self.ctx.stopping.is_set, **shared,
            )
            sent += source.size - result.resumed_bytes
            resumed += result.resumed_bytes
            left = after
            return result.crc64

        try:
            if files.segments and not ticket.address.object_prefix:
                raise CloudError("InvalidUploadAddress", "the upload address of an M3U8 video has no ObjectPrefix "
                                 "for its segments", retryable=False)
            for name, segment in files.segments:
                key = ticket.address.object_prefix + name
                again = None if refresh is None else _retargeted(refresh, key)
                send(segment, replace(ticket, address=ticket.address.at(key)), again)
            crc = send(files.main, ticket, refresh)
            for _, segment in files.segments:
                crc = segment.crc64(initial=crc)
        except UploadInterrupted as stop:  # what this run sent before the stop was still sent
            self.ctx.tally.add(sent + stop.sent, began, time.monotonic())
            raise
        finally:
            self.ctx.reporter.upload_finished(item.name)
        self.ctx.tally.add(total - resumed, began, time.monotonic())  # what this run sent
        return digest_of(crc)


def _bytes_in(item: DesiredItem, digest: str) -> dict[str, Any]:
    """What a record says once an item's bytes are uploaded: which file, and which content."""
    assert item.local is not None
    local = item.local
    return {
        "content_hash": digest, "source": local.path, "size": local.total_size, "mtime_ns": local.newest_mtime_ns,
        "protect": item.protect, "last_result": f"uploaded {local.total_size} bytes",
    }


def _retargeted(refresh: Callable[[], UploadTicket], key: str) -> Callable[[], UploadTicket]:
    """A refresh for an HLS segment: the video's new credential, for the segment's key."""
    def again() -> UploadTicket:
        ticket = refresh()
        return replace(ticket, address=ticket.address.at(key))
    return again
