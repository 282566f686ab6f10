"""Media records of the emulated VOD account and the rules that validate them.

Owns: the `Video`, `Image` and `AttachedMedia` records (what the account holds),
their status lifecycles computed from timestamps and the emulator clock, the
parameter validators with VOD's error codes, and the JSON/snapshot shapes of each
record. No HTTP and no locking here: `vod.VodModel` does the orchestration.

Choices on points vod-api.md leaves unverified:
- Title "emoji": any code point outside the Basic Multilingual Plane, plus the
  emoji joiners U+200D / U+FE0F, is an emoji (VOD stores titles as 3-byte UTF-8).
- FileName / URL extensions must be one of `VIDEO_EXTS | AUDIO_EXTS` (case-insensitive);
  anything else is `InvalidFileName.Extension`.
- Video lifecycle after the object lands, with T = transcode_seconds:
  `UploadSucc` for the first 20% of T, `Transcoding` until T, then `Normal`.
- Unset optional fields (Description, Tags, CoverURL, CateId, ReferenceId, ...) are
  omitted from responses, as the real service omits nulls. Media is never probed:
  no Duration, Width or Height.
- Size is 0 until the object has landed, then the object's size.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vodsync.emulator.errors import VodApiError

VIDEO_EXTS = frozenset(
    "mp4 ts 3gp mpg mpeg mpe dat vob asf avi wmv asx mkv mov m4v flv f4v rm rmvb m3u8 webm mts mxf swf dv gif"
    .split()
)
AUDIO_EXTS = frozenset("mp3 wav wma m4a aac ac3 flac ape amr ogg opus aiff".split())
IMAGE_EXTS = ("png", "jpg", "jpeg", "gif")
ATTACHED_EXTS = {
    "watermark": ("png", "gif", "apng", "mov"),
    "subtitle": ("srt", "ass", "stl", "ttml", "vtt"),
    "material": ("jpg", "gif", "png", "mp4", "mat", "zip"),
}
IMAGE_TYPES = ("default", "cover")
NO_TRANSCODE = "VOD_NO_TRANSCODE"
DEFAULT_APP_ID = "app-1000000"

TITLE_MAX = 128
DESCRIPTION_MAX = 1024
TAGS_MAX = 16
TAG_MAX = 32
# Every status a video can have (vod-api.md §4); the control plane may put a video in any of them.
VIDEO_STATUSES = frozenset(
    "Uploading UploadSucc Transcoding Normal Checking Blocked TranscodeFail UploadFail ProduceFail".split()
)
UPLOAD_SUCC_SHARE = 0.2  # share of transcode_seconds a video spends in UploadSucc

# C0, DEL, C1 and the bidi embeddings/overrides/isolates: refused in Title, Description and Tags.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_REFERENCE_ID = re.compile(r"[A-Za-z0-9_-]{6,64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")


def iso(ts: float) -> str:
    """VOD's time format: UTC, second precision, `Z` suffix."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_iso(text: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def ext_of(name: str) -> str:
    """Lower-cased extension without the dot, '' when there is none."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base.strip("."):
        return ""
    return base.rsplit(".", 1)[1].lower()


def is_audio(ext: str) -> bool:
    return ext in AUDIO_EXTS


# ---------------------------------------------------------------- validation


def missing(name: str) -> VodApiError:
    return VodApiError(
        "MissingParameter",
        f'The input parameter "{name}" that is mandatory for processing this request is not supplied.',
        400,
    )


def invalid(name: str, why: str = "") -> VodApiError:
    detail = f" {why}" if why else ""
    return VodApiError(f"InvalidParameter.{name}", f'The specified parameter "{name}" is not valid.{detail}', 400)


def require(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise missing(name)
    return value


def _has_emoji(text: str) -> bool:
    return any(ord(ch) > 0xFFFF or ch in "\u200d\ufe0f" for ch in text)


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def check_title(title: str) -> str:
    if _utf8_len(title) > TITLE_MAX:
        raise VodApiError("LengthExceededMax", f"The length of Title exceeds the maximum ({TITLE_MAX} bytes).", 400)
    if _has_emoji(title) or _has_control(title):
        raise VodApiError("IllegalCharacters", "The Title contains illegal characters.", 400)
    return title


def check_description(text: str) -> str:
    if _utf8_len(text) > DESCRIPTION_MAX:
        raise VodApiError(
            "LengthExceededMax", f"The length of Description exceeds the maximum ({DESCRIPTION_MAX} bytes).", 400
        )
    if _has_emoji(text) or _has_control(text):
        raise VodApiError("IllegalCharacters", "The Description contains illegal characters.", 400)
    return text


def check_tags(text: str) -> str:
    """Tags stay the comma-separated string VOD stores; empty items are dropped."""
    if _has_control(text):
        raise VodApiError("IllegalCharacters", "The Tags contain illegal characters.", 400)
    tags = [t.strip() for t in text.split(",") if t.strip()]
    if len(tags) > TAGS_MAX:
        raise VodApiError("TagsExceededMax", f"The number of tags exceeds the maximum ({TAGS_MAX}).", 400)
    if any(_utf8_len(t) > TAG_MAX for t in tags):
        raise VodApiError("TagsExceededMax", f"The length of a tag exceeds the maximum ({TAG_MAX} bytes).", 400)
    return ",".join(tags)


def check_cate_id(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise invalid("CateId", "It must be an integer.") from None


def check_reference_id(value: str) -> str:
    if not _REFERENCE_ID.fullmatch(value):
        raise invalid("ReferenceId", "It must be 6 to 64 characters of A-Z, a-z, 0-9, '-' and '_'.")
    return value


def check_media_file_name(name: str) -> str:
    """Extension of a video/audio file name, or InvalidFileName.Extension."""
    ext = ext_of(name)
    if ext not in VIDEO_EXTS and ext not in AUDIO_EXTS:
        raise VodApiError("InvalidFileName.Extension", "The file extension of FileName is invalid.", 400)
    return ext


def check_template_group_id(value: str) -> str:
    """Known template groups: `VOD_NO_TRANSCODE` and any 32-hex id (the emulator has no catalogue)."""
    if value != NO_TRANSCODE and not _HEX32.fullmatch(value):
        raise VodApiError("InvalidTemplateGroupId.NotFound", "The TemplateGroupId does not exist.", 404)
    return value


def split_ids(params: dict[str, str], name: str, limit: int, code: str | None = None) -> list[str]:
    """A comma-separated id list, deduplicated in order; over `limit` is `code` (or InvalidParameter.name)."""
    raw = params.get(name) or ""
    ids = list(dict.fromkeys(i.strip() for i in raw.split(",") if i.strip()))
    if len(ids) > limit:
        if code:
            raise VodApiError(code, f"The number of {name} exceeds the maximum ({limit}).", 400)
        raise invalid(name, f"At most {limit} values are allowed.")
    return ids


# ------------------------------------------------------------------- M3U8


def is_playlist_key(key: str) -> bool:
    return key.lower().endswith(".m3u8")


def segment_prefix(key: str) -> str:
    """ObjectPrefix of an M3U8 video: the playlist's "directory" (its format is a guess)."""
    return key.rpartition("/")[0] + "/"


def playlist_segments(text: str) -> list[str]:
    """The URIs a media playlist names: its non-tag lines and `#EXT-X-MAP` URIs."""
    names = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-MAP") and 'URI="' in line:
            names.append(line.split('URI="', 1)[1].split('"', 1)[0])
        elif line and not line.startswith("#"):
            names.append(line)
    return names


# ------------------------------------------------------------------- records


@dataclass
class Media:
    """Fields every kind of media shares; timestamps are emulator-clock epoch seconds."""

    media_id: str
    title: str
    bucket: str
    key: str
    created_at: float
    modified_at: float
    seq: int  # creation order, breaks CreationTime ties when sorting
    description: str | None = None
    tags: str | None = None
    app_id: str = DEFAULT_APP_ID
    user_data: str | None = None
    storage_location: str = ""
    size: int = 0
    landed_at: float | None = None  # when the object was completely written; None = Uploading

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Media:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def touch(self, now: float) -> None:
        self.modified_at = now

    def optional(self, out: dict[str, Any]) -> dict[str, Any]:
        for key, value in (("Description", self.description), ("Tags", self.tags), ("UserData", self.user_data)):
            if value:
                out[key] = value
        return out


@dataclass
class Video(Media):
    file_name: str = ""  # the caller's FileName, not the OSS key
    missing_segments: tuple[str, ...] = ()  # M3U8: segments the landed playlist names that were not there
    cover_url: str | None = None
    cate_id: int | None = None
    reference_id: str | None = None
    template_group_id: str | None = None
    transcode: bool = True  # False with VOD_NO_TRANSCODE, and for RegisterMedia without a template
    origin: str = "upload"  # upload | url | register
    register_url: str | None = None
    forced_status: str | None = None  # set through the control plane (review, failures); wins over the lifecycle

    @property
    def media_type(self) -> str:
        return "audio" if is_audio(ext_of(self.key)) else "video"

    def status(self, now: float, transcode_seconds: float) -> str:
        if self.forced_status:
            return self.forced_status
        if self.landed_at is None or now < self.landed_at:
            return "Uploading"
        if self.missing_segments:
            return "UploadFail"
        if not self.transcode or transcode_seconds <= 0:
            return "Normal"
        elapsed = now - self.landed_at
        if elapsed < transcode_seconds * UPLOAD_SUCC_SHARE:
            return "UploadSucc"
        if elapsed < transcode_seconds:
            return "Transcoding"
        return "Normal"

    def to_api(self, status: str, region: str, nested_snapshots: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "VideoId": self.media_id,
            "Title": self.title,
            "Status": status,
            "CreationTime": iso(self.created_at),
            "ModificationTime": iso(self.modified_at),
            "Size": self.size,
            "StorageLocation": self.storage_location,
            "RegionId": region,
            "AppId": self.app_id,
            "AuditStatus": "Init",
            "Snapshots": {"Snapshot": []} if nested_snapshots else [],
        }
        if self.cate_id is not None:
            out["CateId"] = self.cate_id
            out["CateName"] = f"category-{self.cate_id}"
        for key, value in (
            ("CoverURL", self.cover_url),
            ("ReferenceId", self.reference_id),
            ("TemplateGroupId", self.template_group_id),
        ):
            if value:
                out[key] = value
        return self.optional(out)


@dataclass
class Image(Media):
    image_type: str = "default"
    image_ext: str = "png"
    cate_id: int | None = None
    original_file_name: str | None = None

    def status(self, now: float) -> str:
        return "Normal" if self.landed_at is not None and now >= self.landed_at else "Uploading"

    def to_api(self, status: str, file_url: str) -> dict[str, Any]:
        mezzanine: dict[str, Any] = {"FileSize": self.size, "FileURL": file_url}
        if self.original_file_name:
            mezzanine["OriginalFileName"] = self.original_file_name
        out: dict[str, Any] = {
            "ImageId": self.media_id,
            "Title": self.title,
            "ImageType": self.image_type,
            "Status": status,
            "CreationTime": iso(self.created_at),
            "ModificationTime": iso(self.modified_at),
            "StorageLocation": self.storage_location,
            "AppId": self.app_id,
            "URL": file_url,
            "Mezzanine": mezzanine,
        }
        if self.cate_id is not None:
            out["CateId"] = self.cate_id
        return self.optional(out)


@dataclass
class AttachedMedia(Media):
    business_type: str = "material"
    media_ext: str = ""
    file_name: str | None = None
    cate_ids: list[int] = field(default_factory=list)

    def status(self, now: float) -> str:
        return "Normal" if self.landed_at is not None and now >= self.landed_at else "Uploading"

    def to_api(self, status: str, file_url: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "MediaId": self.media_id,
            "Title": self.title,
            "Type": self.business_type,
            "URL": file_url,
            "Status": status,
            "FileSize": self.size,
            "StorageLocation": self.storage_location,
            "AppId": self.app_id,
            "CreationTime": iso(self.created_at),
            "ModificationTime": iso(self.modified_at),
            "Categories": [{"CateId": c, "CateName": f"category-{c}", "Level": 0} for c in self.cate_ids],
        }
        return self.optional(out)
