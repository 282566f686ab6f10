"""The frozen values the cloud layer hands to the engine (and takes from it).

Nothing here talks to the network. Values that hold credentials hide them in
their repr so that a stray log line or traceback cannot leak them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

URL_JOB_TERMINAL = frozenset({"SUCCESS", "DOWNLOAD_FAIL", "UPLOAD_FAIL"})

MediaKind = Literal["video", "image", "attached"]


@dataclass(frozen=True)
class UploadAddress:
    endpoint: str  # with scheme, e.g. https://oss-cn-shanghai.aliyuncs.com
    bucket: str
    key: str  # the OSS object key, exactly UploadAddress.FileName
    region: str = ""  # the bucket's region, which V4 signatures name (UploadAuth.Region); "" = unknown
    object_prefix: str = ""  # M3U8 videos: where the segments go (UploadAddress.ObjectPrefix + name)

    def at(self, key: str) -> UploadAddress:
        """The same bucket and credential scope, another object key (an HLS segment's)."""
        return replace(self, key=key)


@dataclass(frozen=True)
class UploadCredential:
    access_key_id: str
    access_key_secret: str
    security_token: str
    deadline: float  # epoch seconds after which OSS refuses the token

    def __repr__(self) -> str:
        return f"UploadCredential(access_key_id='***', access_key_secret='***', security_token='***', deadline={self.deadline!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class UploadTicket:
    media_id: str
    address: UploadAddress
    credential: UploadCredential


@dataclass(frozen=True)
class Created:
    """What a Create* call came to: the service's answer, or (after a request that may have
    landed) the ticket of the video it made, found again by its ReferenceId, or the news that
    an earlier attempt with the same SessionId landed (`repeated`)."""

    response: Mapping[str, Any] = field(default_factory=dict)
    ticket: UploadTicket | None = None
    repeated: bool = False


@dataclass(frozen=True)
class UploadResult:
    etag: str
    crc64: int  # the local file's CRC-64/XZ, equal to OSS's x-oss-hash-crc64ecma when OSS reported one
    size: int
    resumed_bytes: int = 0  # already in OSS (parts an earlier run sent) when this upload began


@dataclass(frozen=True)
class UrlUploadEntry:
    url: str
    title: str
    description: str | None = None
    tags: tuple[str, ...] = ()
    cate_id: int | None = None
    cover_url: str | None = None
    template_group_id: str | None = None
    workflow_id: str | None = None
    file_extension: str | None = None


@dataclass(frozen=True)
class UrlJob:
    job_id: str
    url: str
    status: str
    media_id: str | None = None
    file_size: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    creation_time: str | None = None  # when the job was submitted (ISO 8601, UTC), for crash recovery

    @property
    def terminal(self) -> bool:
        return self.status in URL_JOB_TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"


@dataclass(frozen=True)
class RegisterEntry:
    file_url: str
    title: str
    description: str | None = None
    tags: tuple[str, ...] = ()
    cate_id: int | None = None
    cover_url: str | None = None

    @property
    def storage_address(self) -> str:
        """The bucket this FileURL names, as RegisterMedia compares them: "all files in the
        request must have the same storage address" (vod-api.md §00). A bucket domain
        (`bucket.oss-cn-shanghai.aliyuncs.com`, or a custom one) is the address itself; on an
        IP or localhost (path-style, as the emulator serves) it is host and first path segment.
        The scheme does not matter."""
        parts = urlsplit(self.file_url)
        host = (parts.netloc.rsplit("@", 1)[-1]).lower()
        if not _is_ip_or_localhost(parts.hostname or ""):
            return host
        return f"{host}/{parts.path.lstrip('/').split('/', 1)[0]}"


@dataclass(frozen=True)
class Registered:
    file_url: str
    media_id: str
    new_register: bool


@dataclass(frozen=True)
class RemoteMedia:
    media_id: str
    kind: MediaKind
    status: str
    title: str
    description: str | None = None
    tags: tuple[str, ...] = ()
    cate_id: int | None = None
    cover_url: str | None = None
    size: int | None = None
    reference_id: str | None = None
    creation_time: str | None = None  # as the API wrote it (ISO 8601, UTC)
    user_data: str | None = None  # as the API wrote it (JSON text); SearchMedia never shows it


def same_file_url(a: str, b: str) -> bool:
    """Whether two FileURLs name one object: RegisterMedia may answer with another scheme
    (`http://` for `https://`, vod-api.md §00) or another percent-encoding of the key."""
    return _file_url_key(a) == _file_url_key(b)


def _file_url_key(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.netloc.lower(), unquote(parts.path)


def _is_ip_or_localhost(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Hit:
    """One SearchMedia result, with what `SEARCH_FIELDS` brought back (None: not shown)."""

    media_id: str
    title: str | None
    status: str | None
    created: float | None  # CreationTime, epoch seconds


# SearchMedia: the fields a search asks for, and the view of an item that holds them, by search type.
SEARCH_FIELDS = ("Title", "Status", "CreationTime")
_VIEW_KEYS = {"video": "Video", "audio": "Audio", "image": "Image", "attached": "AttachedMedia"}


def search_hit(search_type: str, item: Mapping[str, Any]) -> Hit | None:
    """The typed hit of one SearchMedia item (None: an item without a MediaId)."""
    view = item.get(_VIEW_KEYS[search_type])
    view = view if isinstance(view, Mapping) else {}
    mid = item.get("MediaId") or ""
    if not mid:
        return None
    title, status = view.get("Title", item.get("Title")), view.get("Status", item.get("Status"))
    return Hit(mid, None if title is None else str(title), None if status is None else str(status),
               iso_to_epoch(item.get("CreationTime") or view.get("CreationTime")))


def iso_to_epoch(value: str | None) -> float | None:
    """Epoch seconds of the API's ISO 8601 UTC times (None: absent or unreadable)."""
    if not value:
        return None
    try:
        return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
