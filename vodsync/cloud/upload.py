"""Putting one local file at the OSS address a VOD upload ticket names.

This module owns the oss2 side of an upload: a single PUT below the multipart
threshold, `oss2.resumable_upload` (parallel parts, checkpoint on disk) above
it, CRC-64 verification, credential refresh (proactively at signing time and
reactively on a 403 from OSS, resuming from the parts already sent), retries of
network errors and 5xx with the shared backoff policy, and translation of oss2
exceptions into `CloudError` / `CredentialExpired`.

The file is read by oss2 while sending and once more, on a thread, for its CRC-64 (which
is also its content identity, `vodsync.checksum`); that value is returned. For `vodsync gc`
it also reads the checkpoints interrupted multipart uploads left (`list_checkpoints`)
and aborts such an upload with a credential for its key (`abort_upload`).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oss2
import requests.adapters
from oss2 import exceptions as oss_errors
from oss2.credentials import Credentials

from vodsync.checksum import file_crc64
from vodsync.cloud.retry import RetryPolicy, install_sdk_log_scrubber, is_retryable_code, scrub
from vodsync.cloud.settings import is_loopback_url
from vodsync.cloud.types import UploadCredential, UploadResult, UploadTicket
from vodsync.errors import CloudError, CredentialExpired

__all__ = [
    "Checkpoint", "UploadResult", "abort_checkpointed", "abort_upload", "list_checkpoints", "settle_checkpoints",
    "upload_file",
]

AUTH_ERRORS = frozenset({"SecurityTokenExpired", "InvalidAccessKeyId"})
MAX_REACTIVE_REFRESHES = 3
PROACTIVE_RETRY_AFTER = 30.0  # seconds to keep a still-valid token when a proactive refresh failed
NETWORK_ERROR = "SDK.HttpError"
RETRY_LIST_PARTS = (0.05, 0.2, 0.5)  # waits between ListParts attempts (idempotent, cheap)
MiB = 1024 * 1024
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
    path: str | Path,
    *,
    refresh: Callable[[], UploadTicket] | None,
    checkpoint_dir: Path,
    part_size: int | None = None,
    multipart_threshold: int = 16 * 1024**2,
    threads: int = 4,
    progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.time,
    refresh_margin: float = 300,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> UploadResult:
    """Upload `path` to `ticket.address`; returns the ETag, the file's CRC-64 and size.

    The CRC-64 is the local file's, checked equal to the whole object's when OSS reports one.

    `refresh` must return a ticket for the same address with a new credential
    (RefreshUploadVideo). Without it an expired token raises `CredentialExpired`.
    Raises `CloudError` for everything else OSS or the network does.
    """
    install_sdk_log_scrubber()
    path = Path(path)
    size = path.stat().st_size
    holder = _CredentialHolder(ticket, refresh, clock, refresh_margin)
    address = ticket.address
    reporter = _Progress(progress, size)
    bucket = _Bucket(
        oss2.ProviderAuth(holder),
        address.endpoint,
        address.bucket,
        session=_session(address.endpoint, threads),
        # oss2's own CRC runs crcmod over every byte (~0.4 GB/s of client CPU); instead the whole
        # object's CRC-64, which OSS reports on the final PUT or Complete, is checked below against
        # the local file (fastcrc, ~13 GB/s). That also covers parts an earlier process sent.
        enable_crc=False,
        on_part=reporter.part_done,
    )
    multipart = size >= multipart_threshold
    if part_size is None:
        part_size = choose_part_size(size, threads)
    _abort_stale_upload(bucket, Path(checkpoint_dir), address.key, path, resumable=multipart)
    store = _PrivateStore(Path(checkpoint_dir)) if multipart else None

    def once() -> Any:
        reporter.begin_attempt()
        if not multipart:
            with open(path, "rb") as f:
                return bucket.put_object(address.key, f, progress_callback=reporter)
        return oss2.resumable_upload(
            bucket,
            address.key,
            str(path),
            store=store,
            multipart_threshold=multipart_threshold,
            part_size=part_size,
            num_threads=threads,
            progress_callback=reporter,
        )

    local_crc = _FileCrc(path)
    delays = (policy or RetryPolicy()).delays()
    reactive_left = MAX_REACTIVE_REFRESHES
    parts_seen = 0
    while True:
        try:
            result = once()
            if result.crc is not None and result.crc != local_crc.value():
                raise oss_errors.InconsistentError("the object's CRC-64 differs from the local file's",
                                                   result.request_id)
            break
        except oss_errors.OssError as exc:
            err = _translate(exc)
            if isinstance(exc, oss_errors.InconsistentError):
                # The file may have changed under us: read it again for the next attempt. And a
                # part that failed its CRC may already be listed by the server: start over.
                local_crc = _FileCrc(path)
                if store is not None:
                    store.forget(address.bucket, address.key, path)
        if isinstance(err, CredentialExpired):
            if refresh is None or reactive_left == 0:
                raise err
            reactive_left -= 1
            holder.refresh_now()  # then resume: ListParts, send only the missing parts
            continue
        if not err.retryable:
            raise err
        if reporter.parts_done > parts_seen:
            # The budget is for failures in a row: an attempt that landed parts made progress
            # that the next one keeps (ListParts), so a long upload through a flaky network
            # finishes. Still bounded: every reset needs at least one new part.
            parts_seen = reporter.parts_done
            delays = (policy or RetryPolicy()).delays()
        delay = next(delays, None)
        if delay is None:
            raise err
        sleep(delay)

    reporter(size, size)
    crc = local_crc.value()
    if crc is None:  # the file could not be read for its checksum (oss2 could, moments before)
        raise CloudError("LocalReadError", f"cannot read {path.name} for its CRC-64", retryable=True)
    return UploadResult(etag=result.etag, crc64=crc, size=size)


class _FileCrc:
    """CRC-64/XZ of a local file, computed on a thread while the upload runs."""

    def __init__(self, path: Path) -> None:
        self._value: int | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._value = file_crc64(str(path))
        except OSError:
            self._value = None

    def value(self) -> int | None:
        self._thread.join()
        return self._value


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


class _Bucket(oss2.Bucket):
    """An oss2.Bucket that remembers the CRC-64 of every part it sent.

    After a resume, oss2 only knows the parts it listed (no CRC) and so skips
    its whole-object CRC check; filling in the CRCs we saw lets it check again.
    """

    def __init__(self, *args: Any, on_part: Callable[[int], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_part = on_part
        self._part_crcs: dict[tuple[str, int], int] = {}
        self._crc_lock = threading.Lock()

    def list_parts(self, key, upload_id, marker="", max_parts=1000, headers=None):  # type: ignore[no-untyped-def]
        # Every (re)start of a resumable upload lists parts twice before sending any. Retried
        # here, on its own: if one failed listing ended the whole attempt, a flaky network would
        # spend the upload's retry budget on attempts that could not make progress.
        for delay in (*RETRY_LIST_PARTS, None):
            try:
                return super().list_parts(key, upload_id, marker, max_parts, headers)
            except oss_errors.OssError as exc:
                err = _translate(exc)
                if delay is None or not err.retryable or isinstance(err, CredentialExpired):
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    def upload_part(self, key, upload_id, part_number, data, progress_callback=None, headers=None):  # type: ignore[no-untyped-def]
        result = super().upload_part(key, upload_id, part_number, data, progress_callback, headers)
        if result.crc is not None:
            with self._crc_lock:
                self._part_crcs[(upload_id, part_number)] = result.crc
        if self._on_part is not None:
            # resumable_upload passes a SizedFileAdapter sized to the part
            self._on_part(data.size if isinstance(data, oss2.utils.SizedFileAdapter) else len(data))
        return result

    def complete_multipart_upload(self, key, upload_id, parts, headers=None):  # type: ignore[no-untyped-def]
        with self._crc_lock:
            for part in parts or ():
                if part.part_crc is None:
                    part.part_crc = self._part_crcs.get((upload_id, part.part_number))
        return super().complete_multipart_upload(key, upload_id, parts, headers=headers)


def _abort_stale_upload(bucket: oss2.Bucket, checkpoint_dir: Path, key: str, path: Path, *, resumable: bool) -> None:
    """Abort the multipart upload of a checkpoint this upload will not resume.

    oss2 drops a checkpoint whose file changed (size/mtime) and starts a new upload, and a
    single PUT ignores checkpoints; either way the old upload's parts would stay in OSS for
    good. We hold a credential for this very key now, so this is the moment to abort it.
    """
    store_key = oss2.ResumableStore.make_store_key(bucket.bucket_name, key, os.path.abspath(path))
    checkpoint = checkpoint_dir / oss2.resumable._UPLOAD_TEMP_DIR / store_key
    try:
        record = json.loads(checkpoint.read_text())
        if resumable and record["size"] == path.stat().st_size and record["mtime"] == os.path.getmtime(path):
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

    def forget(self, bucket: str, key: str, path: Path) -> None:
        store_key = self.make_store_key(bucket, key, os.path.abspath(path))
        try:
            self.delete(store_key)
        except FileNotFoundError:
            pass


class _Progress:
    """Thread-safe, monotonic progress.

    oss2's resumable upload reports only when a part starts (and at the end),
    which with parallel parts jumps from the first part to 100%. We also count
    each finished part: done = what oss2 listed as finished when this attempt
    began + parts finished in this attempt.
    """

    def __init__(self, callback: Callable[[int, int], None] | None, total: int) -> None:
        self._callback = callback
        self._total = total
        self._done = -1
        self._baseline: int | None = None
        self._attempt_bytes = 0
        self.parts_done = 0  # parts sent successfully, over all attempts
        self._lock = threading.Lock()

    def begin_attempt(self) -> None:
        with self._lock:
            self._baseline, self._attempt_bytes = None, 0

    def __call__(self, done: int, total: int | None = None) -> None:
        with self._lock:
            if self._baseline is None:
                self._baseline = done
            self._emit(done)

    def part_done(self, size: int) -> None:
        with self._lock:
            self.parts_done += 1
            self._attempt_bytes += size
            self._emit((self._baseline or 0) + self._attempt_bytes)

    def _emit(self, done: int) -> None:
        done = min(done, self._total)
        if self._callback is None or done <= self._done:
            return
        self._done = done
        self._callback(done, self._total)


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
    auth = oss2.StsAuth(cred.access_key_id, cred.access_key_secret, cred.security_token)
    bucket = oss2.Bucket(auth, ticket.address.endpoint, ticket.address.bucket,
                         session=_session(ticket.address.endpoint, 1))
    try:
        bucket.abort_multipart_upload(ticket.address.key, upload_id)
    except oss_errors.NoSuchUpload:
        return
    except oss_errors.OssError as exc:
        raise _translate(exc) from None
