"""URL upload jobs (UploadMediaByURL): the job record, its status timeline and the real download.

A job's visible status is computed from its timestamps and the emulator clock, with
S = url_job_seconds:

    PENDING      created_at .. created_at + S/4        (not picked up yet)
    PROCESSING   created_at + S/4 .. download start    (the worker waits for created_at + S/2)
    DOWNLOADING  while the worker streams the URL into the VOD bucket (wall time)
    DOWNLOAD_SUCCESS / UPLOADING / UPLOAD_SUCCESS   over the S/2 after the download ended
    SUCCESS      from download end + S/2
    DOWNLOAD_FAIL | UPLOAD_FAIL   at once when the download / store fails (terminal)
    CANCELED     after CancelUrlUploadJobs (only before the download started)

The video appears (MediaId) when the download ends; it reads `Uploading` until the
job reaches UPLOAD_SUCCESS and then transcodes like an uploaded one.

Unverified choices: a canceled job reads `CANCELED`; failure codes are
`DownloadFailed` (HTTP error, refused connection, timeout, over 20 GB) and
`UploadFailed` (the store refused the object).
"""

from __future__ import annotations

import base64
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, BinaryIO
from urllib.parse import quote

from vodsync.emulator.media import iso

MAX_SOURCE_BYTES = 20 * 1024**3
DOWNLOAD_TIMEOUT = 15.0
TERMINAL = frozenset({"SUCCESS", "DOWNLOAD_FAIL", "UPLOAD_FAIL", "CANCELED"})

# Downloads ignore HTTP(S)_PROXY: sources are usually loopback test servers.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class UrlJob:
    job_id: str
    url: str  # decoded source URL
    ext: str
    key: str  # where the download lands in the VOD bucket
    created_at: float
    seq: int
    metadata: dict[str, Any] = field(default_factory=dict)
    template_group_id: str | None = None
    workflow_id: str | None = None
    user_data: str | None = None
    app_id: str | None = None
    download_started_at: float | None = None
    download_ended_at: float | None = None
    outcome: str | None = None  # ok | download_fail | upload_fail | canceled
    canceled_at: float | None = None
    file_size: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    media_id: str | None = None

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> UrlJob:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def download_may_start_at(self, seconds: float) -> float:
        return self.created_at + seconds / 2

    def upload_success_at(self, seconds: float) -> float:
        """When the job reaches UPLOAD_SUCCESS; the video stops being `Uploading` then."""
        assert self.download_ended_at is not None
        return self.download_ended_at + seconds / 3

    def status(self, now: float, seconds: float) -> str:
        if self.outcome == "canceled":
            return "CANCELED"
        if self.outcome == "download_fail":
            return "DOWNLOAD_FAIL"
        if self.outcome == "upload_fail":
            return "UPLOAD_FAIL"
        if self.download_started_at is None:
            return "PENDING" if now < self.created_at + seconds / 4 else "PROCESSING"
        if self.download_ended_at is None:
            return "DOWNLOADING"
        since = now - self.download_ended_at
        if since < seconds / 6:
            return "DOWNLOAD_SUCCESS"
        if since < seconds / 3:
            return "UPLOADING"
        if since < seconds / 2:
            return "UPLOAD_SUCCESS"
        return "SUCCESS"

    def complete_at(self, seconds: float) -> float | None:
        if self.outcome in ("download_fail", "upload_fail"):
            return self.download_ended_at
        if self.outcome == "canceled":
            return self.canceled_at
        if self.outcome == "ok" and self.download_ended_at is not None:
            return self.download_ended_at + seconds / 2
        return None

    def to_api(self, now: float, seconds: float) -> dict[str, str]:
        """GetURLUploadInfos entry: every value is a string."""
        status = self.status(now, seconds)
        out = {
            "JobId": self.job_id,
            "UploadURL": self.url,
            "Status": status,
            "CreationTime": iso(self.created_at),
        }
        if self.media_id:
            out["MediaId"] = self.media_id
        if self.file_size is not None:
            out["FileSize"] = str(self.file_size)
        done = self.complete_at(seconds)
        if status in TERMINAL and done is not None:
            out["CompleteTime"] = iso(done)
        if self.user_data:
            out["UserData"] = self.user_data
        if self.error_code:
            out["ErrorCode"] = self.error_code
            out["ErrorMessage"] = self.error_message or ""
        return out


class JobFailed(Exception):
    def __init__(self, outcome: str, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.outcome = outcome
        self.code = code
        self.message = message


class _AbortableReader:
    """Wraps the HTTP response so `close()` of the model stops a streaming download."""

    def __init__(self, raw: BinaryIO, stop: threading.Event) -> None:
        self._raw = raw
        self._stop = stop
        self.count = 0

    def readinto(self, view: memoryview) -> int:
        if self._stop.is_set():
            raise JobFailed("download_fail", "DownloadFailed", "The download was interrupted.")
        try:
            got = self._raw.readinto(view) or 0
        except OSError as exc:
            raise JobFailed("download_fail", "DownloadFailed", f"Reading the source failed: {exc}") from exc
        self.count += got
        return got


def wire_url(url: str) -> str:
    """`url` as it goes on the wire: spaces and non-ASCII characters percent-encoded (UTF-8),
    what is already encoded and the URL's own delimiters left as they are."""
    return quote(url, safe="%:/?#[]@!$&'()*+,;=~")


def _request(url: str) -> urllib.request.Request:
    """A GET of `url`; `user:password@` in it becomes HTTP Basic authentication, as a browser does
    (the service's documentation is silent on such URLs: a guess, see docs/emulator.md)."""
    url = wire_url(url)
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return urllib.request.Request(url, method="GET")
    userinfo, _, host = parts.netloc.rpartition("@")
    plain = urllib.parse.urlunsplit(parts._replace(netloc=host))
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(
        f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
    ).decode("ascii")
    return urllib.request.Request(plain, method="GET", headers={"Authorization": f"Basic {token}"})


def download_into(
    url: str,
    store: Callable[[BinaryIO, int | None], Any],
    stop: threading.Event,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> int:
    """Stream `url` into `store(fileobj, length)`; returns the byte count or raises JobFailed."""
    try:
        response = _OPENER.open(_request(url), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise JobFailed("download_fail", "DownloadFailed", f"The source URL answered HTTP {exc.code}.") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise JobFailed("download_fail", "DownloadFailed", f"The source URL cannot be reached: {reason}") from exc
    with response:
        header = response.headers.get("Content-Length")
        length = int(header) if header and header.isdigit() else None
        if length is not None and length > MAX_SOURCE_BYTES:
            raise JobFailed("download_fail", "DownloadFailed", "The source file is larger than 20 GB.")
        reader = _AbortableReader(response, stop)
        try:
            store(reader, length)
        except JobFailed:
            raise
        except Exception as exc:  # the store's own failure, whatever its type
            raise JobFailed("upload_fail", "UploadFailed", f"Storing the file failed: {exc}") from exc
        if length is not None and reader.count != length:
            raise JobFailed("download_fail", "DownloadFailed", "The source closed the connection early.")
        return reader.count
