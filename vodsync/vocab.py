"""The vocabulary every layer shares: what kind of media an item is (`Kind`) and which producer
made it (`Origin`). It sits below `desired/` and `state/`, so a `Record` holds these values
themselves and not strings converted back at every use. It imports nothing from vodsync.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Kind", "Origin"]


class Kind(StrEnum):
    VIDEO = "video"  # local file -> CreateUploadVideo + OSS upload
    IMAGE = "image"  # local file -> CreateUploadImage + OSS upload
    ATTACHED = "attached"  # local file -> CreateUploadAttachedMedia + OSS upload
    URL = "url"  # UploadMediaByURL, followed with GetURLUploadInfos
    REGISTER = "register"  # RegisterMedia of an object already in OSS

    @property
    def uploads_local_file(self) -> bool:
        return self in (Kind.VIDEO, Kind.IMAGE, Kind.ATTACHED)

    @property
    def remote_is_video(self) -> bool:
        """URL ingests and registrations end as VOD videos, updated like uploaded ones."""
        return self in (Kind.VIDEO, Kind.URL, Kind.REGISTER)


_MANIFEST = "manifest"
_DROP = "drop:"


class Origin(str):
    """Which producer made an item: a manifest, or the drop folder with a given label.

    The value is its stored form (`manifest` | `drop:<label>`), so a state file reads back
    unchanged and an origin compares equal to that text. Drop-folder items are never pruned
    (`engine/diff.py`): only a manifest's items go when the manifest drops them.
    """

    __slots__ = ()

    def __new__(cls, text: str = _MANIFEST) -> Origin:
        if text != _MANIFEST and not (text.startswith(_DROP) and len(text) > len(_DROP)):
            raise ValueError(f"an origin is 'manifest' or 'drop:<label>', not {text!r}")
        return super().__new__(cls, text)

    @classmethod
    def manifest(cls) -> Origin:
        return MANIFEST

    @classmethod
    def drop(cls, label: str) -> Origin:
        """The origin of the items the drop folder labelled `label` makes."""
        return cls(_DROP + label)

    @property
    def is_drop(self) -> bool:
        return self.startswith(_DROP)

    @property
    def label(self) -> str | None:
        """The drop folder's label, or None for a manifest."""
        return self[len(_DROP) :] if self.is_drop else None


MANIFEST = str.__new__(Origin, _MANIFEST)
