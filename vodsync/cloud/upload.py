"""Putting one local file at the OSS address a VOD upload ticket names.

This module owns the oss2 side of an upload: a single PUT below the multipart
threshold, `oss2.resumable_upload` (parallel parts, checkpoint on disk) above
it, CRC-64 verification, credential refresh (proactively at signing time and
reactively on a 403 from OSS, resuming from the parts already sent), retries of
network errors and 5xx with the shared backoff policy, and translation of oss2
exceptions into `CloudError` / `CredentialExpired`.

The file is opened once (`vodsync.sourcefile`: no symlink followed, checked to be the regular
file planned) and read only through that descriptor: by oss2 while sending (every part from
the same descriptor, never by path) and once more, on a thread, for its CRC-64 (which is also
its content identity, `vodsync.checksum`); that value is returned. For `vodsync gc`
it also reads the checkpoints interrupted multipart uploads left (`list_checkpoints`)
and aborts such an upload with a credential for its key (`abort_upload`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import fastcrc
import oss2
import requests.adapters
from oss2 import exceptions as oss_errors
from oss2.credentials import Credentials

from vodsync.cloud.retry import (
    RetryPolicy,
    call_with_retry,
    install_sdk_log_scrubber,
    is_retryable_code,
    scrub,
)
from vodsync.cloud.settings import is_loopback_url
from vodsync.cloud.types import UploadAddress, UploadCredential, UploadResult, UploadTicket
from vodsync.errors import CloudError, CredentialExpired, LocalFileRefused, UploadInterrupted
from vodsync.sourcefile import SourceFile

__all__ = [
    "Checkpoint", "SharedCheckpoints", "UploadResult", "abort_checkpointed", "abort_upload", "list_checkpoints",
    "settle_checkpoints", "upload_file",
]

log = logging.getLogger("vodsync.upload")

AUTH_ERRORS = frozenset({"SecurityTokenExpired", "InvalidAccessKeyId"})
# OSS refuses V1 signatures on buckets created since 2025 (vod-api.md §00): every request is signed V4.
SIGNATURE = oss2.AUTH_VERSION_4
_ENDPOINT_REGION = re.compile(r"(?:[^.]+\.)?oss-(?P<region>[a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com$")
MAX_REACTIVE_REFRESHES = 3  # refreshes in a row with no part landed between them (progress renews it)
PROACTIVE_RETRY_AFTER = 30.0  # seconds to keep a still-valid token when a proactive refresh failed
NETWORK_ERROR = "SDK.HttpError"
RETRY_LIST_PARTS = (0.05, 0.2, 0.5)  # waits between ListParts attempts (idempotent, cheap)
MiB = 1024 * 1024
SENT_PARTS = "vodsync_sent_parts"  # our key in oss2's checkpoint: part number -> bytes, as each part lands
MIN_AUTO_PART, MAX_AUTO_PART = 8 * MiB, 32 * MiB


def choose_part_size(size: int, threads: int) -> int:
    """The part size for a file of `size` bytes sent by `threads` threads: one part per thread
    where that gives 8-32 MiB parts, else the nearest bound (whole MiB).

    Every part costs a request and a round trip, so parts should be large; but a file's
    threads each need a part, and a part lost to a network error is sent again whole,
    so not larger than that. (oss2 raises it further if OSS's 10,000-part limit needs.)
    """
    per_thread = -(-size // max(threads, 1))
    rounded = -(-per_thread // MiB) * MiB
    return min(MAX_AUTO_PART, max(MIN_AUTO_PART, rounded))


def upload_file(
    ticket: UploadTicket,
    path: str | Path | SourceFile,
    *,
    refresh: Callable[[], UploadTicket] | None,
    checkpoint_dir: Path,
    part_size: int | None = None,
    multipart_threshold: int = 16 * 1024**2,
    threads: int = 4,
    progress: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.time,
    refresh_margin: float = 300,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], object] = time.sleep,
    shared: SharedCheckpoints | None = None,
) -> UploadResult:
    """Upload `path` to `ticket.address`; returns the ETag, the file's CRC-64 and size.

    `path` is best an already checked `SourceFile` (the caller closes it); a path is opened here
    once, as whatever regular file is there. The CRC-64 is the local file's, read from the same
    descriptor as the bytes sent, and checked equal to the whole object's when OSS reports one.
    A file that is not (or stops being) that regular file raises `LocalFileRefused`.

    `refresh` must return a ticket for the same address with a new credential
    (RefreshUploadVideo). Without it an expired token raises `CredentialExpired`.
    Raises `CloudError` for everything else OSS or the network does.

    With `shared`, a multipart upload's checkpoint is also kept in the shared state, so another
    host that reads the same file can resume it (`_MirroredStore`).

    `progress(sent, to_send)` counts bytes as they go out, within parts too; a resumed multipart
    upload counts only what was still missing. Once `stop()` is true, a multipart upload raises
    `UploadInterrupted` before its next part (a part already under way is finished first); a
    single PUT, which has no part boundary, completes.
    """
    install_sdk_log_scrubber()
    # oss2's part-thread queue logs every exception it re-raises with its traceback (ERROR), an
    # `UploadInterrupted` included: the exception reaches us and is reported; the log is noise.
    logging.getLogger("oss2.task_queue").setLevel(logging.CRITICAL)
    opened = contextlib.nullcontext(path) if isinstance(path, SourceFile) else SourceFile.open(path)
    with opened as source:
        return _upload(ticket, source, refresh=refresh, checkpoint_dir=checkpoint_dir, part_size=part_size,
                       multipart_threshold=multipart_threshold, threads=threads, progress=progress, clock=clock,
                       refresh_margin=refresh_margin, policy=policy, sleep=sleep, stop=stop, shared=shared)


def _upload(
    ticket: UploadTicket,
    source: SourceFile,
    *,
    refresh: Callable[[], UploadTicket] | None,
    checkpoint_dir: Path,
    part_size: int | None,
    multipart_threshold: int,
    threads: int,
    progress: Callable[[int, int], None] | None,
    clock: Callable[[], float],
    refresh_margin: float,
    policy: RetryPolicy | None,
    sleep: Callable[[float], object],
    stop: Callable[[], bool] | None,
    shared: SharedCheckpoints | None,
) -> UploadResult:
    size = source.size
    holder = _CredentialHolder(ticket, refresh, clock, refresh_margin)
    address = ticket.address
    reporter = _Progress(progress, size, resumable=size >= multipart_threshold)
    bucket = _Bucket(
        oss2.ProviderAuthV4(holder),
        address.endpoint,
        address.bucket,
        session=_session(address.endpoint, threads),
        region=_region(address),
        # oss2's own CRC runs crcmod over every byte (~0.4 GB/s of client CPU); instead the whole
        # object's CRC-64, which OSS reports on the final PUT or Complete, is checked below against
        # the local file (fastcrc, ~13 GB/s). That also covers parts an earlier process sent.
        enable_crc=False,
        on_part=lambda number, part_bytes: _part_sent(number, part_bytes),
        on_part_bytes=reporter.part_sending,
        stop=stop,
        sleep=sleep,
    )
    multipart = size >= multipart_threshold
    if part_size is None:
        part_size = choose_part_size(size, threads)
    _abort_stale_upload(bucket, Path(checkpoint_dir), address.key, source, resumable=multipart)
    store: _PrivateStore | None = None
    if multipart:
        store = (_MirroredStore(Path(checkpoint_dir), shared, _sampled_identity(source), source.mtime)
                 if shared is not None else _PrivateStore(Path(checkpoint_dir)))

    def _part_sent(number: int, part_bytes: int) -> None:
        reporter.part_done(number, part_bytes)
        if store is not None:
            store.note_part(address.bucket, address.key, source.path, number, part_bytes)

    def once() -> Any:
        reporter.begin_attempt()
        if not multipart:
            return bucket.put_object(address.key, _slice(source, 0, size), progress_callback=reporter.sent)
        return _DescriptorUploader(
            bucket, address.key, source, store=store, part_size=part_size, progress_callback=reporter.listed,
            num_threads=threads,
        ).upload()

    crc = _FileCrc(source)  # replaced when a CRC mismatch makes the file suspect
    renewals = _Renewals(holder, refresh, lambda: reporter.parts_done)

    def attempt() -> Any:
        """One try at the whole object, through as many credential renewals as make sense; a
        renewal is not a retry (nothing failed but the token), so it happens at once."""
        nonlocal crc
        while True:
            try:
                result = once()
                if result.crc is not None and result.crc != crc.value():
                    raise oss_errors.InconsistentError("the object's CRC-64 differs from the local file's",
                                                       result.request_id)
                return result
            except UploadInterrupted as stopped:  # raised in a part thread, which knows nothing of the rest
                raise UploadInterrupted(stopped.key, sent=reporter.landed_bytes) from None
            except oss_errors.OssError as exc:
                err = _translate(exc)
                if isinstance(exc, oss_errors.InconsistentError):
                    # The file may have changed under us: read it again for the next attempt. And a
                    # part that failed its CRC may already be listed by the server: start over.
                    crc = _FileCrc(source)
                    if store is not None:
                        store.forget(address.bucket, address.key, source.path)
                if not (isinstance(err, CredentialExpired) and renewals.renew()):
                    raise err from None

    result = call_with_retry(
        attempt,
        delays=_ProgressBudget(policy or RetryPolicy(), lambda: reporter.parts_done),
        sleep=sleep,
        retryable=lambda err: err.retryable and not isinstance(err, CredentialExpired),
    )
    reporter.sent(size)
    return UploadResult(etag=result.etag, crc64=crc.value(), size=size, resumed_bytes=reporter.resumed or 0)


class _Renewals:
    """Reactive credential renewals of one upload: at most `MAX_REACTIVE_REFRESHES` in a row that
    land no part between them. A long upload on short-lived tokens that keeps landing parts is
    not stuck, so progress restores the allowance."""

    def __init__(self, holder: _CredentialHolder, refresh: Callable[[], UploadTicket] | None,
                 parts_done: Callable[[], int]) -> None:
        self._holder = holder
        self._can = refresh is not None
        self._parts_done = parts_done
        self._parts_at_last = 0
        self._left = MAX_REACTIVE_REFRESHES

    def renew(self) -> bool:
        """Renew the credential (then the upload resumes: ListParts, only the missing parts), or
        False when that is not allowed any more."""
        if self._parts_done() > self._parts_at_last:
            self._parts_at_last = self._parts_done()
            self._left = MAX_REACTIVE_REFRESHES
        if not self._can or self._left == 0:
            return False
        self._left -= 1
        self._holder.refresh_now()
        return True


class _ProgressBudget:
    """The retry delays of one upload, started over whenever parts landed since the last failure:
    the budget is for failures in a row, so a long upload through a flaky network finishes, and
    stays bounded (every restart needs a new part)."""

    def __init__(self, policy: RetryPolicy, parts_done: Callable[[], int]) -> None:
        self._policy = policy
        self._parts_done = parts_done
        self._seen = 0
        self._delays = policy.delays()

    def __iter__(self) -> _ProgressBudget:
        return self

    def __next__(self) -> float:
        if self._parts_done() > self._seen:
            self._seen = self._parts_done()
            self._delays = self._policy.delays()
        return next(self._delays)


class _FileCrc:
    """CRC-64/XZ of the source, computed on a thread (from its descriptor) while the upload runs."""

    def __init__(self, source: SourceFile) -> None:
        self._value: int | None = None
        self._error: LocalFileRefused | None = None
        # Its own descriptor of the same file: the upload may end (and its caller close the
        # source) before this read does, when the upload fails.
        self._thread = threading.Thread(target=self._run, args=(source.dup(),), daemon=True)
        self._thread.start()

    def _run(self, source: SourceFile) -> None:
        try:
            with source:
                self._value = source.crc64()
        except LocalFileRefused as exc:
            self._error = exc
        except OSError as exc:
            self._error = LocalFileRefused(f"cannot read {source.path} for its CRC-64: {exc.strerror or exc}")

    def value(self) -> int:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


class _SourceSlice:
    """`length` bytes of a source from `offset`, read with `pread` (so parallel parts share one descriptor)."""

    def __init__(self, source: SourceFile, offset: int, length: int) -> None:
        self._source = source
        self._offset = offset
        self._end = offset + length

    def read(self, amt: int | None = None) -> bytes:
        left = self._end - self._offset
        n = left if amt is None or amt < 0 else min(amt, left)
        data = self._source.read_at(self._offset, n)
        self._offset += len(data)
        return data


def _slice(source: SourceFile, offset: int, length: int) -> oss2.utils.SizedFileAdapter:
    return oss2.utils.SizedFileAdapter(_SourceSlice(source, offset, length), length)


class _DescriptorUploader(oss2.resumable._ResumableUploader):
    """oss2's resumable uploader (checkpoints, ListParts, parallel parts), reading every part from
    the checked descriptor instead of opening the file by name for each part as oss2 does.

    oss2 2.19 has no hook for that: its one part-reading method (`__upload_part`, name-mangled)
    is replaced here, and the mtime its checkpoint records is the descriptor's.
    """

    def __init__(self, bucket: oss2.Bucket, key: str, source: SourceFile, **kwargs: Any) -> None:
        self._source = source
        try:  # oss2 stats the name for its checkpoint's mtime (no read); the descriptor's is recorded
            super().__init__(bucket, key, source.path, source.size, **kwargs)
        except OSError:
            raise LocalFileRefused(f"{source.path} was removed or replaced while being uploaded") from None
        self._ResumableUploader__mtime = source.mtime

    def _ResumableUploader__upload_part(self, part: Any) -> None:  # noqa: N802 - oss2's mangled name
        self._report_progress(self._ResumableUploader__finished_size)
        headers = oss2.resumable._populate_valid_headers(
            self._ResumableUploader__headers, [oss2.headers.OSS_REQUEST_PAYER, oss2.headers.OSS_TRAFFIC_LIMIT]
        )
        result = self.bucket.upload_part(self.key, self._ResumableUploader__upload_id, part.part_number,
                                         _slice(self._source, part.start, part.size), headers=headers)
        self._ResumableUploader__finish_part(
            oss2.models.PartInfo(part.part_number, result.etag, size=part.size, part_crc=result.crc)
        )


class _CredentialHolder(oss2.CredentialsProvider):
    """The upload's current STS credential, shared by all part threads.

    oss2 asks for credentials each time it signs a request; that is where we
    check the clock and swap in a fresh ticket's credential before the deadline,
    so a long upload never sends an expired token.
    """

    def __init__(
        self,
        ticket: UploadTicket,
        refresh: Callable[[], UploadTicket] | None,
        clock: Callable[[], float],
        margin: float,
    ) -> None:
        self._lock = threading.Lock()
        self._refresh = refresh
        self._clock = clock
        self._margin = margin
        self._address = ticket.address
        self._install(ticket.credential)

    def _install(self, credential: UploadCredential) -> None:
        now = self._clock()
        self._credential = credential
        self._creds = Credentials(credential.access_key_id, credential.access_key_secret, credential.security_token)
        # Refresh `margin` before the deadline, but never sooner than halfway through a
        # short-lived token's life: otherwise every signature would ask for a new one.
        self._refresh_at = max(credential.deadline - self._margin, now + (credential.deadline - now) / 2)

    def get_credentials(self) -> Credentials:
        with self._lock:
            if self._refresh is not None and self._clock() >= self._refresh_at:
                try:
                    self._swap()
                except CloudError:
                    now = self._clock()
                    if now >= self._credential.deadline:
                        raise
                    # The token still works: keep it and try again a little later.
                    self._refresh_at = now + min(PROACTIVE_RETRY_AFTER, (self._credential.deadline - now) / 2)
            return self._creds

    def refresh_now(self) -> None:
        with self._lock:
            self._swap()

    def _swap(self) -> None:
        assert self._refresh is not None
        ticket = self._refresh()
        if ticket.address != self._address:
            raise CloudError(
                "UploadAddressChanged",
                "the refreshed upload ticket names a different bucket/key; an upload cannot move mid-way",
                retryable=False,
            )
        self._install(ticket.credential)


def _list_again(exc: oss_errors.OssError) -> bool:
    """Whether a failed ListParts is tried again: a transient failure, not an expired credential."""
    err = _translate(exc)
    return err.retryable and not isinstance(err, CredentialExpired)


class _Bucket(oss2.Bucket):
    """An oss2.Bucket that remembers the CRC-64 of every part it sent, reports the bytes of a
    part as they go out, and stops between parts once `stop()` is true.

    After a resume, oss2 only knows the parts it listed (no CRC) and so skips
    its whole-object CRC check; filling in the CRCs we saw lets it check again.
    """

    def __init__(self, *args: Any, on_part: Callable[[int, int], None] | None = None,
                 on_part_bytes: Callable[[int, int], None] | None = None,
                 stop: Callable[[], bool] | None = None, sleep: Callable[[float], object] = time.sleep,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sleep = sleep
        self._on_part = on_part
        self._on_part_bytes = on_part_bytes
        self._stop = stop
        self._part_crcs: dict[tuple[str, int], int] = {}
        self._crc_lock = threading.Lock()

    def list_parts(self, key, upload_id, marker="", max_parts=1000, headers=None):  # type: ignore[no-untyped-def]
        # Every (re)start of a resumable upload lists parts twice before sending any. Retried
        # here, on its own: if one failed listing ended the whole attempt, a flaky network would
        # spend the upload's retry budget on attempts that could not make progress.
        return call_with_retry(
            lambda: super(_Bucket, self).list_parts(key, upload_id, marker, max_parts, headers),
            delays=RETRY_LIST_PARTS, sleep=self._sleep, errors=oss_errors.OssError, retryable=_list_again,
        )

    def upload_part(self, key, upload_id, part_number, data, progress_callback=None, headers=None):  # type: ignore[no-untyped-def]
        # The part boundary: every part thread of resumable_upload passes here before sending.
        if self._stop is not None and self._stop():
            raise UploadInterrupted(key)
        if progress_callback is None and self._on_part_bytes is not None:
            on_bytes = self._on_part_bytes

            def progress_callback(sent: int, _total: int | None) -> None:
                on_bytes(part_number, sent)

        result = super().upload_part(key, upload_id, part_number, data, progress_callback, headers)
        if result.crc is not None:
            with self._crc_lock:
                self._part_crcs[(upload_id, part_number)] = result.crc
        if self._on_part is not None:
            # resumable_upload passes a SizedFileAdapter sized to the part
            self._on_part(part_number, data.size if isinstance(data, oss2.utils.SizedFileAdapter) else len(data))
        return result

    def complete_multipart_upload(self, key, upload_id, parts, headers=None):  # type: ignore[no-untyped-def]
        with self._crc_lock:
            for part in parts or ():
                if part.part_crc is None:
                    part.part_crc = self._part_crcs.get((upload_id, part.part_number))
        return super().complete_multipart_upload(key, upload_id, parts, headers=headers)


def _abort_stale_upload(bucket: oss2.Bucket, checkpoint_dir: Path, key: str, source: SourceFile, *,
                        resumable: bool) -> None:
    """Abort the multipart upload of a checkpoint this upload will not resume.

    oss2 drops a checkpoint whose file changed (size/mtime) and starts a new upload, and a
    single PUT ignores checkpoints; either way the old upload's parts would stay in OSS for
    good. We hold a credential for this very key now, so this is the moment to abort it.
    """
    store_key = oss2.ResumableStore.make_store_key(bucket.bucket_name, key, os.path.abspath(source.path))
    checkpoint = checkpoint_dir / oss2.resumable._UPLOAD_TEMP_DIR / store_key
    try:
        record = json.loads(checkpoint.read_text())
        if resumable and record["size"] == source.size and record["mtime"] == source.mtime:
            return  # oss2 resumes it
        upload_id = str(record["upload_id"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        return  # unreadable: oss2 discards it; `vodsync gc` reports it
    try:
        bucket.abort_multipart_upload(key, upload_id)
    except oss_errors.NoSuchUpload:
        pass
    except oss_errors.OssError:
        return  # keep the checkpoint, so `vodsync gc` can still report the upload
    checkpoint.unlink(missing_ok=True)


class _PrivateStore(oss2.ResumableStore):
    """oss2's checkpoint store, with files created 0600 (they name our bucket, key and upload id)."""

    TEMP_NAME = re.compile(r"(?P<name>.+)\.(?P<pid>\d+)\.\d+\.tmp")  # what `put` writes before its rename

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)  # its listing names our uploads too (mkdir's mode is cut by the umask)
        super().__init__(root=str(root))
        os.chmod(self.dir, 0o700)

    def put(self, key: str, value: Any) -> None:
        target = os.path.join(self.dir, key)
        tmp = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
        os.replace(tmp, target)

    def note_part(self, bucket: str, key: str, path: str, number: int, size: int) -> None:
        """Add a part sent to the checkpoint oss2 wrote (oss2 keeps none for uploads: it lists
        them from OSS), so that a plan can say what a resume still has to send without a call
        (`sent_bytes`)."""
        store_key = self.make_store_key(bucket, key, os.path.abspath(path))
        with self._note_lock:
            record = self.get(store_key)
            if not isinstance(record, dict):
                return  # completed (oss2 removed it) or never written
            sent = {**(record.get(SENT_PARTS) or {}), str(number): size}
            self.put(store_key, {**record, SENT_PARTS: sent})

    _note_lock = threading.Lock()

    def forget(self, bucket: str, key: str, path: str) -> None:
        store_key = self.make_store_key(bucket, key, os.path.abspath(path))
        try:
            self.delete(store_key)
        except FileNotFoundError:
            pass


class SharedCheckpoints(Protocol):
    """Where the identities of multipart uploads are shared between hosts (a shared state:
    `PostgresStore`), so that one host can resume an upload another started and did not finish."""

    def get_checkpoint(self, key: str) -> str | None: ...
    def put_checkpoint(self, key: str, value: str) -> None: ...
    def delete_checkpoint(self, key: str) -> None: ...


CONTENT_ID = "vodsync_content"  # our key in a shared checkpoint: the identity of the file's content
_SAMPLE = 1024 * 1024


def _sampled_identity(source: SourceFile) -> str:
    """The file's size and the CRC-64 of its first, middle and last MiB: enough to tell another
    host's copy of the same file from a different one without reading it all before the upload
    starts. (A resume is still checked whole: the object's CRC-64 must equal the file's.)"""
    size = source.size
    crc = 0
    for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
        crc = fastcrc.crc64.xz(source.read_at(offset, _SAMPLE), initial=crc)
    return f"{size}:{crc:016x}"


class _MirroredStore(_PrivateStore):
    """The local checkpoint store, mirrored into the shared state.

    oss2 resumes a checkpoint only for a file of the same size and mtime; the mtime of another
    host's copy of a file differs, so a shared checkpoint carries a content identity instead,
    and one read back for the same path *and the same content* gets this host's mtime: oss2
    then lists the parts already in OSS (ListParts) and sends only the rest. A checkpoint of
    other content is handed over as it is, and oss2 starts a new upload.
    """

    def __init__(self, root: Path, shared: SharedCheckpoints, content_id: str, mtime: float) -> None:
        super().__init__(root)
        self._shared, self._content, self._mtime = shared, content_id, mtime

    def get(self, key: str) -> Any:
        local = super().get(key)
        if local is not None:
            return local
        text = self._shared.get_checkpoint(key)
        try:
            value = json.loads(text) if text is not None else None
        except ValueError:
            return None
        if isinstance(value, dict) and value.get(CONTENT_ID) == self._content:
            log.info("resuming a multipart upload another host started (upload %s)", value.get("upload_id"))
            return {**value, "mtime": self._mtime}
        return value

    def put(self, key: str, value: Any) -> None:
        value = {**value, CONTENT_ID: self._content}
        super().put(key, value)
        self._shared.put_checkpoint(key, json.dumps(value))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            super().delete(key)
        self._shared.delete_checkpoint(key)


class _Progress:
    """Thread-safe, monotonic progress in bytes, within parts too.

    oss2's resumable upload reports only when a part starts (the bytes of the parts finished
    so far, listed from OSS on a resume) and at the end; with parallel parts that jumps from
    the first part to 100%. So each part's own bytes are counted as they are read for
    sending (`part_sending`), and each finished part (`part_done`): done = what oss2 listed as
    finished when this attempt began + parts finished in this attempt + bytes of parts under
    way. What OSS already held when the upload began (`resumed`: the first attempt's listing)
    is not this upload's to send: the callback gets (sent, to_send) net of it.
    """

    def __init__(self, callback: Callable[[int, int], None] | None, total: int, *, resumable: bool) -> None:
        self._callback = callback
        self._total = total
        self._done = -1
        self._baseline: int | None = None if resumable else 0
        self.resumed = None if resumable else 0
        self._attempt_bytes = 0
        self._inflight: dict[int, int] = {}  # part number -> bytes of it read for sending
        self.parts_done = 0  # parts sent successfully, over all attempts
        self.landed_bytes = 0  # their bytes
        self._resumable = resumable
        self._lock = threading.Lock()

    def begin_attempt(self) -> None:
        with self._lock:
            self._baseline = None if self._resumable else 0
            self._attempt_bytes = 0
            self._inflight.clear()

    def listed(self, done: int, total: int | None = None) -> None:
        """oss2's resumable callback: bytes of the finished parts, when a part starts."""
        with self._lock:
            if self._baseline is None:
                self._baseline = done
                if self.resumed is None:
                    self.resumed = done
            self._emit(max(done, self._baseline + self._attempt_bytes + sum(self._inflight.values())))

    def sent(self, done: int, total: int | None = None) -> None:
        """A single PUT's callback (bytes read for sending), and the end of any upload."""
        with self._lock:
            if self.resumed is None:  # nothing listed: every part was already in OSS
                self.resumed = self._baseline = done
            self._emit(done)

    def part_sending(self, part_number: int, sent: int) -> None:
        with self._lock:
            self._inflight[part_number] = sent
            self._emit((self._baseline or 0) + self._attempt_bytes + sum(self._inflight.values()))

    def part_done(self, part_number: int, size: int) -> None:
        with self._lock:
            self._inflight.pop(part_number, None)
            self.parts_done += 1
            self.landed_bytes += size
            self._attempt_bytes += size
            # Said again even when the part's bytes were already counted as read: a landed part is news.
            self._emit((self._baseline or 0) + self._attempt_bytes + sum(self._inflight.values()), landed=True)

    def _emit(self, done: int, *, landed: bool = False) -> None:
        done = min(done, self._total)
        if self._callback is None or done < self._done or (done == self._done and not landed):
            return
        self._done = done
        base = self.resumed or 0
        self._callback(max(done - base, 0), self._total - base)


class _LargeBlockAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, sending file bodies in large blocks.

    urllib3 reads a file-like body (oss2 hands it a part as a file adapter) and calls
    `sendall` once per block of 16 KiB: two system calls and a few Python frames per
    16 KiB, about a quarter of the client's CPU on a fast link. One block per MiB sends
    the same bytes with 1/64 of that overhead; memory grows by 1 MiB per part thread.
    """

    BLOCKSIZE = 1 << 20

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, blocksize=self.BLOCKSIZE, **pool_kwargs)


def _session(endpoint: str, threads: int) -> oss2.Session:
    size = max(threads + 2, 10)
    session = oss2.Session(adapter=_LargeBlockAdapter(pool_connections=size, pool_maxsize=size))
    if is_loopback_url(endpoint):
        # requests would honour HTTP(S)_PROXY for 127.0.0.1 unless NO_PROXY says otherwise.
        session.session.trust_env = False
    return session


def _region(address: UploadAddress) -> str:
    """The region V4 signatures name: the ticket's, else read from an `oss-<region>.aliyuncs.com` endpoint."""
    if address.region:
        return address.region
    match = _ENDPOINT_REGION.match(urlsplit(address.endpoint).hostname or "")
    if match is None:
        raise CloudError("SDK.NoRegion", f"the upload ticket names no region and its endpoint "
                         f"{address.endpoint} does not say one; OSS V4 signatures need it", retryable=False)
    return match["region"]


def _translate(exc: oss_errors.OssError) -> CloudError:
    """oss2 exception -> CloudError (CredentialExpired for a refused STS token)."""
    if isinstance(exc, oss_errors.RequestError):
        return CloudError(NETWORK_ERROR, f"network error talking to OSS: {type(exc.exception).__name__}", retryable=True)
    if isinstance(exc, oss_errors.InconsistentError):
        return CloudError(
            "InconsistentError", "CRC-64 of the uploaded data does not match OSS's", request_id=exc.request_id or None,
            retryable=True,
        )
    if isinstance(exc, oss_errors.ServerError) and exc.status > 0:
        code = exc.code or f"OSS.{exc.status}"
        message = scrub(exc.message or f"OSS answered HTTP {exc.status}")
        if exc.status == 403 and code in AUTH_ERRORS:
            return CredentialExpired(code, message, status=exc.status, request_id=exc.request_id or None)
        retryable = is_retryable_code(code, exc.status) or code == "RequestTimeout"
        return CloudError(code, message, status=exc.status, request_id=exc.request_id or None, retryable=retryable)
    return CloudError("OSS.ClientError", scrub(getattr(exc, "body", "") or type(exc).__name__), retryable=False)


# ---- leftovers of interrupted multipart uploads (for `vodsync gc`) ---------------------------


@dataclass(frozen=True)
class Checkpoint:
    """One oss2 resumable-upload checkpoint: a multipart upload that was started and not finished."""

    path: Path  # the checkpoint file itself
    bucket: str
    key: str
    upload_id: str
    file_path: str  # the local file being uploaded
    parts: int  # parts recorded as sent


def _read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint in `path`, or None when it is not one (unreadable, or cut short)."""
    try:
        data = json.loads(path.read_text())
        return Checkpoint(path, str(data["bucket"]), str(data["key"]), str(data["upload_id"]),
                          str(data["file_path"]), len(data.get("parts") or ()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def sent_bytes(checkpoint_dir: Path, path: str | Path) -> int:
    """Bytes of the file at `path` already in OSS, by the checkpoint of its unfinished multipart
    upload: what a resume will not send again. 0 without one, or when the file changed since
    (oss2 would start over). An estimate for plans: the upload itself asks OSS (ListParts)."""
    root = Path(checkpoint_dir) / oss2.resumable._UPLOAD_TEMP_DIR
    if not root.is_dir():
        return 0
    target = os.path.abspath(path)
    try:
        stat = os.stat(target)
    except OSError:
        return 0
    for checkpoint in root.iterdir():
        try:
            data = json.loads(checkpoint.read_text())
            if data["file_path"] == target and data["size"] == stat.st_size and data["mtime"] == stat.st_mtime:
                return sum(int(v) for v in (data.get(SENT_PARTS) or {}).values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return 0


def list_checkpoints(checkpoint_dir: Path) -> tuple[list[Checkpoint], list[Path]]:
    """The checkpoints under `checkpoint_dir`, and files there that are not checkpoints (a temp
    file a killed process left before its rename, or an unreadable one)."""
    root = Path(checkpoint_dir) / oss2.resumable._UPLOAD_TEMP_DIR
    found: list[Checkpoint] = []
    junk: list[Path] = []
    if not root.is_dir():
        return found, junk
    for path in sorted(root.iterdir()):
        if not path.is_file():
            continue
        checkpoint = _read_checkpoint(path)
        if checkpoint is None:
            junk.append(path)
        else:
            found.append(checkpoint)
    return found, junk


def settle_checkpoints(checkpoint_dir: Path) -> None:
    """Finish the checkpoint writes that killed processes left half done.

    A checkpoint is written to `<name>.<pid>.<thread>.tmp`, then renamed over `<name>`. A temp
    file of another process that holds a whole checkpoint is newer than the file it was to
    replace, so it takes that file's place: the upload it names is resumed (or aborted) like
    any other. One cut short names nothing usable and is removed. Call only while no other
    process uploads with this directory (under the state file's writer lock).
    """
    root = Path(checkpoint_dir) / oss2.resumable._UPLOAD_TEMP_DIR
    if not root.is_dir():
        return
    ours = str(os.getpid())
    for tmp in root.glob("*.tmp"):
        match = _PrivateStore.TEMP_NAME.fullmatch(tmp.name)
        if match is None or match["pid"] == ours or not tmp.is_file():
            continue  # not ours to settle, or a write of this process (a daemon's) under way
        target = root / match["name"]
        try:
            if _read_checkpoint(tmp) is not None and (
                    not target.exists() or target.stat().st_mtime <= tmp.stat().st_mtime):
                os.replace(tmp, target)
            else:
                tmp.unlink()
        except OSError:
            continue  # `vodsync gc` still reports it


def abort_checkpointed(ticket: UploadTicket, checkpoint: Checkpoint) -> None:
    """Abort the multipart upload `checkpoint` names (the ticket's credential covers its key), then
    forget the checkpoint: nothing can resume it any more."""
    abort_upload(ticket, checkpoint.upload_id)
    checkpoint.path.unlink(missing_ok=True)


def abort_upload(ticket: UploadTicket, upload_id: str) -> None:
    """Abort multipart upload `upload_id` at the ticket's address (its STS credential covers that key).
    An upload that no longer exists counts as aborted."""
    install_sdk_log_scrubber()
    cred = ticket.credential
    auth = oss2.StsAuth(cred.access_key_id, cred.access_key_secret, cred.security_token, auth_version=SIGNATURE)
    bucket = oss2.Bucket(auth, ticket.address.endpoint, ticket.address.bucket,
                         session=_session(ticket.address.endpoint, 1), region=_region(ticket.address))
    try:
        bucket.abort_multipart_upload(ticket.address.key, upload_id)
    except oss_errors.NoSuchUpload:
        return
    except oss_errors.OssError as exc:
        raise _translate(exc) from None
