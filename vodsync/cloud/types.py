"""The frozen values the cloud layer hands to the engine (and takes from it).

Nothing here talks to the network. Values that hold credentials hide them in
their repr so that a stray log line or traceback cannot leak them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Literal
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
