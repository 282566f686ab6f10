"""The desired set's vocabulary: what kind of media an item is and what it should look like.

`DesiredItem` is what manifests and drop folders produce and what the engine
diffs against the state file. It is a frozen value: the pipeline from here to
the plan is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vodsync.errors import Location
from vodsync.vocab import Kind, Origin

__all__ = ["DesiredItem", "Kind", "LocalFile", "ManifestSet", "Move", "Origin", "UPDATABLE_FIELDS"]


# Metadata a later Update* call can change, per kind. Everything else is fixed at creation.
UPDATABLE_FIELDS: Mapping[Kind, tuple[str, ...]] = {
    Kind.VIDEO: ("title", "description", "tags", "cate_id", "cover_url"),
    Kind.URL: ("title", "description", "tags", "cate_id", "cover_url"),
    Kind.REGISTER: ("title", "description", "tags", "cate_id", "cover_url"),
    Kind.IMAGE: ("title", "description", "tags", "cate_id"),
    Kind.ATTACHED: ("title", "description", "tags", "cate_id"),
}


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A local file as seen at load time: enough to tell whether it changed without reading it."""

    path: str  # absolute, already confined to an allowed root
    size: int
    mtime_ns: int
    dev: int = 0  # device and inode of the file planned (0: not recorded): the upload opens
    ino: int = 0  # exactly that file or refuses (vodsync.sourcefile)
    segments: tuple[Segment, ...] = ()  # an HLS playlist's segments, in playlist order

    @property
    def total_size(self) -> int:
        """Bytes to upload: the file's, and its segments' (what the state records as `size`)."""
        return self.size + sum(s.file.size for s in self.segments)

    @property
    def newest_mtime_ns(self) -> int:
        """The latest mtime of the file and its segments (what the state records as `mtime_ns`), so
        that a changed segment moves the item's stat and its content is hashed again."""
        return max((self.mtime_ns, *(s.file.mtime_ns for s in self.segments)))


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment an HLS playlist names: uploaded to `UploadAddress.ObjectPrefix + name`."""

    name: str  # as the playlist writes it: a relative path, no `..`
    file: LocalFile


@dataclass(frozen=True, slots=True)
class DesiredItem:
    """One media item that should exist in VOD.

    `source` is the absolute local path (video, image, attached), the source
    URL (url) or the OSS FileURL (register). `metadata` holds only the
    updatable fields of `UPDATABLE_FIELDS[kind]` that the manifest sets
    (tags as a tuple); `options` holds creation-only settings
    (template_group_id, workflow_id, image_type, business_type,
    storage_location, app_id). Absent keys mean "not managed".
    """

    name: str
    kind: Kind
    source: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    local: LocalFile | None = None
    protect: bool = False
    origin: Location | None = None  # where it is declared (a manifest's line, a dropped file)
    made_by: Origin = Origin.manifest()  # which producer made it: recorded as the record's origin
    import_id: str | None = None  # media to adopt instead of creating it (`import_id:` in a manifest)
    # A URL with `user:password@` is stored and shown redacted (`source`); this is the URL
    # to fetch. Changing only the password is not a new source. Never stored, never shown.
    fetch_url: str | None = field(default=None, repr=False, compare=False)

    @property
    def fetch(self) -> str:
        """What the service is asked to fetch (a URL item's source with its credentials)."""
        return self.fetch_url or self.source

    def __hash__(self) -> int:
        return hash((self.name, self.kind, self.source))


@dataclass(frozen=True, slots=True)
class Move:
    """A manifest's `moved: [{from: OLD, to: NEW}]` entry: the item once named OLD is now NEW.

    The record is re-keyed and the media kept (its ID, its bytes); see `engine/moves.py`.
    """

    old: str
    new: str
    origin: Location | None = None


@dataclass(frozen=True)
class ManifestSet:
    """Everything the manifests declare: the items, and the renames (`moved`) of earlier items."""

    items: list[DesiredItem]
    moves: list[Move] = field(default_factory=list)
