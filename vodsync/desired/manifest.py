"""The pydantic models of a manifest file: `defaults`, and a `media` list with one model per `type`.

This module owns the VOD API's input limits (docs vod-api.md §2) as annotated
types, defined once: `MediaMetadata` (title, description, tags, cate_id,
cover_url, template_group_id) is the reusable core that drop-folder sidecars
also validate against, and every item model is built on it. The models are
strict (YAML already gives real types, so `cate_id: "7"` or `title: 2024` is a
mistake worth reporting) and forbid unknown fields, so a typo such as `tittle`
is caught instead of silently ignored.

Parsing YAML, locating lines and turning models into `DesiredItem`s is
`loader.py`'s job; this module is pure validation.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

# --- Extensions the API accepts, per kind -------------------------------------------------------

# What CreateUploadVideo / UploadMediaByURL / RegisterMedia ingest: video and audio containers.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    "3gp asf avi dat dv flv f4v m2t m2ts m3u8 m4v mj2 mjpeg mkv mov mp4 mpe mpeg mpg mts mxf ogg qt "
    "rm rmvb swf ts vob webm wmv "
    "aac ac3 acm amr ape caf flac m4a mp3 opus ra wav wma".split()
)
IMAGE_EXTENSIONS: frozenset[str] = frozenset({"png", "jpg", "jpeg", "gif"})
ATTACHED_EXTENSIONS: dict[str, frozenset[str]] = {
    "watermark": frozenset({"png", "gif", "apng", "mov"}),
    "subtitle": frozenset({"srt", "ass", "stl", "ttml", "vtt"}),
    "material": frozenset({"jpg", "gif", "png", "mp4", "mat", "zip"}),
}

MAX_TITLE = 128
MAX_DESCRIPTION = 1024
MAX_TAGS = 16
MAX_TAG = 32
MAX_FILE_URL_BYTES = 1024
MAX_NAME = 128
MAX_CATE_ID = 2**63 - 1  # CateId is a Java long

NAME_PATTERN = r"^[a-z0-9][a-z0-9._/-]*$"

# Emoji and pictographs VOD refuses in titles (IllegalCharacters): the pictographic planes,
# dingbats/misc symbols, regional indicators, and the joiners/selectors emoji sequences use.
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U0001fc00-\U0001ffff\u2600-\u27bf\u2b00-\u2bff\u3297\u3299"
    "\ufe0f\u200d\u20e3\U000e0020-\U000e007f]"
)


class FieldValueError(ValueError):
    """A model-level check that is about one field: the loader reports it on that field's line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _no_emoji(value: str) -> str:
    found = _EMOJI.search(value)
    if found:
        raise ValueError(f"must not contain emoji ({found.group()!r} at position {found.start() + 1})")
    return value


# Control characters VOD text fields must not carry: C0 (NUL, ESC, CR, LF, TAB, ...), DEL, C1,
# and the bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) that
# make a title display other than it reads.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _no_control(value: str) -> str:
    found = _CONTROL.search(value)
    if found:
        raise ValueError(
            f"must not contain control characters (U+{ord(found.group()):04X} at position {found.start() + 1})"
        )
    return value


def _max_bytes(limit: int) -> AfterValidator:
    """The API's limits are UTF-8 bytes, not characters (vod-api.md §00)."""

    def check(value: str) -> str:
        size = len(value.encode("utf-8"))
        if size > limit:
            raise ValueError(f"must be at most {limit} bytes in UTF-8, got {size} ({len(value)} characters)")
        return value

    return AfterValidator(check)


def _ext(path: str) -> str:
    """The lower-case extension of the last path segment, without the dot ('' if none)."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[-1].lower() if "." in last.lstrip(".") else ""


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http:// or https:// URL, got {value[:200]!r}")
    if any(c.isspace() for c in value):
        raise ValueError("must not contain spaces (percent-encode them as %20)")
    return value


def _choices(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))


# --- The limits, once ---------------------------------------------------------------------------

# Limits in bytes (the character bound in the schema is implied by the byte one); no control characters.
Title = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TITLE),
    _max_bytes(MAX_TITLE),
    AfterValidator(_no_control),
    AfterValidator(_no_emoji),
]
Description = Annotated[
    str, StringConstraints(max_length=MAX_DESCRIPTION), _max_bytes(MAX_DESCRIPTION), AfterValidator(_no_control)
]
# The API joins tags with commas, so a comma inside a tag would silently split it.
Tag = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TAG, pattern=r"^[^,]+$"),
    _max_bytes(MAX_TAG),
    AfterValidator(_no_control),
]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]
CateId = Annotated[int, Field(gt=0, le=MAX_CATE_ID)]
HttpUrl = Annotated[str, StringConstraints(min_length=1, max_length=2048), AfterValidator(_http_url)]
# Template group, workflow, app and storage identifiers: opaque strings chosen by the console.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN)]
# A NUL byte would make os.stat raise instead of answering "no such file".
LocalPath = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MediaMetadata(_Strict):
    """Metadata of one media item, with the API's limits. Reused by drop-folder sidecar files."""

    title: Title | None = Field(
        None, description=f"≤{MAX_TITLE} bytes (UTF-8), no emoji or control characters; defaults to the name"
    )
    description: Description | None = Field(
        None, description=f"≤{MAX_DESCRIPTION} bytes (UTF-8), no control characters (not even line breaks)"
    )
    tags: Tags | None = Field(
        None, description=f"≤{MAX_TAGS} tags, each ≤{MAX_TAG} bytes (UTF-8), no commas or control characters"
    )
    cate_id: CateId | None = Field(None, description="category ID (a positive integer)")
    cover_url: HttpUrl | None = Field(None, description="http(s) URL of the cover image")
    template_group_id: Identifier | None = Field(
        None, description="transcoding template group (set at creation only), e.g. VOD_NO_TRANSCODE"
    )


class _CreationOptions(_Strict):
    protect: bool = Field(False, description="never delete this item when pruning")
    workflow_id: Identifier | None = Field(None, description="workflow to run (wins over template_group_id)")
    storage_location: Identifier | None = Field(None, description="OSS storage location (creation only)")
    app_id: Identifier | None = Field(None, description="VOD application ID (creation only)")


class ManifestDefaults(MediaMetadata, _CreationOptions):
    """`defaults:` of a manifest file: applied to every item of the file that accepts the field."""


def _schema_without_unsupported(schema: dict[str, Any], model: type[BaseModel]) -> None:
    # Editors should not offer fields the item's kind refuses (cover_url on an image).
    for name in getattr(model, "unsupported", ()):
        schema.get("properties", {}).pop(name, None)


class _Item(MediaMetadata, _CreationOptions):
    model_config = ConfigDict(json_schema_extra=_schema_without_unsupported)

    name: Name = Field(description="unique across all manifests: [a-z0-9][a-z0-9._/-]*, ≤128 characters")
    import_id: Identifier | None = Field(
        None, description="adopt this existing media (VideoId, ImageId or MediaId) instead of creating it"
    )
    # Fields this kind cannot take at all (the Create* call has no such parameter).
    unsupported: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.unsupported:
            bad = sorted(k for k in cls.unsupported if data.get(k) is not None)
            if bad:
                kind = data.get("type")
                raise FieldValueError(bad[0], f"{kind} items do not take {', '.join(bad)}")
        return data


class VideoItem(_Item):
    """A local video or audio file uploaded with CreateUploadVideo."""

    type: Literal["video"]
    file: LocalPath = Field(description="local file, relative to this manifest file")

    @field_validator("file")
    @classmethod
    def _video_extension(cls, value: str) -> str:
        if _ext(value) not in VIDEO_EXTENSIONS:
            raise ValueError(
                f"{value!r} is not a video or audio file; extensions: {_choices(VIDEO_EXTENSIONS)}"
            )
        return value


class ImageItem(_Item):
    """A local image uploaded with CreateUploadImage."""

    unsupported: ClassVar[frozenset[str]] = frozenset({"cover_url", "template_group_id", "workflow_id"})
    type: Literal["image"]
    file: LocalPath = Field(description="local file, relative to this manifest file")
    image_type: Literal["default", "cover"] = Field("default", description="default | cover")

    @field_validator("file")
    @classmethod
    def _image_extension(cls, value: str) -> str:
        if _ext(value) not in IMAGE_EXTENSIONS:
            raise ValueError(f"{value!r} is not an image; extensions: {_choices(IMAGE_EXTENSIONS)}")
        return value


class AttachedItem(_Item):
    """A local subtitle, watermark or material file uploaded with CreateUploadAttachedMedia."""

    unsupported: ClassVar[frozenset[str]] = frozenset({"cover_url", "template_group_id", "workflow_id"})
    type: Literal["attached"]
    file: LocalPath = Field(description="local file, relative to this manifest file")
    business_type: Literal["subtitle", "watermark", "material"] = Field(
        description="subtitle | watermark | material"
    )

    @model_validator(mode="after")
    def _attached_extension(self) -> AttachedItem:
        allowed = ATTACHED_EXTENSIONS[self.business_type]
        if _ext(self.file) not in allowed:
            raise FieldValueError(
                "file",
                f"file {self.file!r} does not fit business_type {self.business_type}; "
                f"extensions: {_choices(allowed)}",
            )
        return self


class UrlItem(_Item):
    """A video the service downloads itself (UploadMediaByURL)."""

    type: Literal["url"]
    url: HttpUrl = Field(description="http(s) URL with a file extension, or set file_extension")
    file_extension: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,10}$")] | None = Field(
        None, description="extension of the file behind url, when the URL has none (e.g. mp4)"
    )

    @model_validator(mode="after")
    def _url_extension(self) -> UrlItem:
        if self.file_extension is not None:
            if self.file_extension.lower() not in VIDEO_EXTENSIONS:
                raise FieldValueError(
                    "file_extension",
                    f"file_extension {self.file_extension!r} is not a video or audio extension; "
                    f"extensions: {_choices(VIDEO_EXTENSIONS)}",
                )
        elif _ext(urlsplit(self.url).path) not in VIDEO_EXTENSIONS:
            raise FieldValueError(
                "url",
                f"url {self.url[:200]!r} does not end in a video or audio extension; "
                "add file_extension (for example file_extension: mp4)",
            )
        return self


class RegisterItem(_Item):
    """An object already in a VOD-attached OSS bucket, registered with RegisterMedia.

    Deleting the media (DeleteVideo) deletes that object too: it is the media's source.
    So pruning the item is refused unless it says `on_delete: delete-source`.
    """

    type: Literal["register"]
    file_url: HttpUrl = Field(description="http(s) OSS URL of the object, ≤1024 bytes, media extension")
    on_delete: Literal["keep-source", "delete-source"] | None = Field(
        None,
        description="pruning deletes the media and with it the registered OSS object only with delete-source; "
        "by default (keep-source) such a prune is refused",
    )

    @field_validator("file_url")
    @classmethod
    def _file_url(cls, value: str) -> str:
        if len(value.encode("utf-8")) > MAX_FILE_URL_BYTES:
            raise ValueError(f"must be at most {MAX_FILE_URL_BYTES} bytes")
        if _ext(urlsplit(value).path) not in VIDEO_EXTENSIONS:
            raise ValueError(
                f"{value[:200]!r} does not end in a video or audio extension; "
                f"extensions: {_choices(VIDEO_EXTENSIONS)}"
            )
        return value


MediaItem = Annotated[
    VideoItem | ImageItem | AttachedItem | UrlItem | RegisterItem,
    Field(discriminator="type"),
]
ITEM_TYPES: tuple[str, ...] = ("video", "image", "attached", "url", "register")
ITEM_MODELS: dict[str, type[_Item]] = {
    "video": VideoItem,
    "image": ImageItem,
    "attached": AttachedItem,
    "url": UrlItem,
    "register": RegisterItem,
}
# Per type, the `defaults:` fields that apply to it (a default cover_url must not break image items).
DEFAULTABLE: dict[str, frozenset[str]] = {
    kind: frozenset(ManifestDefaults.model_fields) - model.unsupported for kind, model in ITEM_MODELS.items()
}


class MovedEntry(_Strict):
    """One `moved:` entry: the item once named `from` is now named `to` (its media is kept)."""

    model_config = ConfigDict(populate_by_name=True)

    from_: Name = Field(alias="from", description="the item's old name")
    to: Name = Field(description="the item's new name")


class ManifestFile(_Strict):
    """One manifest file. The loader validates it in parts (to merge defaults); this is its schema."""

    defaults: ManifestDefaults | None = None
    media: list[MediaItem] | None = None
    moved: list[MovedEntry] | None = Field(
        None, description="renamed items: [{from: OLD, to: NEW}]; the media and its ID are kept"
    )


MOVED_ADAPTER: TypeAdapter[list[MovedEntry]] = TypeAdapter(list[MovedEntry])
ITEM_ADAPTER: TypeAdapter[Any] = TypeAdapter(MediaItem)
ITEMS_ADAPTER: TypeAdapter[list[Any]] = TypeAdapter(list[MediaItem])
