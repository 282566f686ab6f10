"""Drop folders -> `DesiredItem`s: which files are finished, what they are, what they are called, and where they go after.

Owns, for one configured drop folder:

- *Stability*: a file is taken only once its size and mtime have not moved for
  `stable_seconds` (`StabilityTracker`, clock injected, so tests never sleep).
  Partial and private files are never taken: `*.part`, `*.tmp`, `*.crdownload`,
  `*.partial`, hidden `.*`, `~*`, `Thumbs.db`, `desktop.ini`, anything in a
  subfolder (notably `done/` and `failed/`), and sidecars themselves.
- *Kind*: by extension for `kind: auto` (video/audio -> video; png/jpg/jpeg/gif
  -> image; srt/ass/stl/ttml/vtt -> attached subtitle), else the configured
  kind; a file that fits neither fails with the reason.
- *Sidecars*: `NAME.yaml` (or `NAME.yml`, or the more specific `NAME.mp4.yaml`)
  beside `NAME.mp4` gives metadata, validated with `MediaMetadata` plus an
  optional `business_type` for attached files. The pair is taken together once
  both are stable; an invalid sidecar fails the pair, the reason naming the
  sidecar file, line and field. Write the sidecar first (or the media as
  `*.part` and rename it), or the media may be taken without it.
- *Identity*: the item name is `drop/<label>/<content digest>` (`vodsync.checksum`), so
  a file is ingested once however often it is renamed, the daemon restarts or
  the same bytes are dropped again; two copies in one scan become one candidate.
  `hash_file` is injected so the caller can use the state's hash cache.
- *After*: `finish_success` keeps (and remembers, so it is not offered again
  until it changes), moves to `done/` or deletes the file; `finish_failure`
  moves it (and its sidecar) to `failed/` with `NAME.reason.txt`. Nothing here
  touches remote media: removing a file from a drop folder never deletes media.

Items carry `made_by=DropFolder.origin` (`drop:<label>`), which their records keep, so
prune never deletes them. Only the folder's top level is scanned. Symbolic
links fail instead of being followed: whoever can write into the folder must
not be able to upload any file the daemon can read.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from vodsync.checksum import file_digest
from vodsync.config import DropFolderSettings, describe_value, explain_error
from vodsync.desired.hls import is_playlist
from vodsync.desired.items import UPDATABLE_FIELDS, DesiredItem, Kind, LocalFile, Origin
from vodsync.desired.manifest import (
    ATTACHED_EXTENSIONS,
    IMAGE_EXTENSIONS,
    ITEM_MODELS,
    MAX_TITLE,
    VIDEO_EXTENSIONS,
    MediaMetadata,
)
from vodsync.errors import ConfigError, Location
from vodsync.yamldoc import node_line, parse_yaml_document, yaml_error_words

log = logging.getLogger(__name__)

DONE_DIR = "done"
FAILED_DIR = "failed"
SIDECAR_SUFFIXES = (".yaml", ".yml")
PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
REASON_SUFFIX = ".reason.txt"
MAX_SIDECAR_BYTES = 64 * 1024
NAME_DIGEST_CHARS = 16
SUBTITLE_EXTENSIONS = ATTACHED_EXTENSIONS["subtitle"]
# For `kind: attached` without a sidecar business_type: the first family that takes the extension.
_BUSINESS_TYPE_ORDER = ("subtitle", "watermark", "material")

HashFile = Callable[[str], str]
Clock = Callable[[], float]


class Sidecar(MediaMetadata):
    """A sidecar file: the media's metadata, plus what an attached file is for."""

    business_type: Literal["subtitle", "watermark", "material"] | None = None


# --- stability -------------------------------------------------------------------------------


class StabilityTracker:
    """Remembers when each path's (size, mtime) last changed; stable once unchanged for `stable_seconds`."""

    def __init__(self, stable_seconds: float) -> None:
        self.stable_seconds = stable_seconds
        self._seen: dict[Any, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, unchanged since)

    def observe(self, path: Any, size: int, mtime_ns: int, now: float) -> None:
        previous = self._seen.get(path)
        if previous is None or previous[:2] != (size, mtime_ns):
            self._seen[path] = (size, mtime_ns, now)

    def is_stable(self, path: Any, now: float) -> bool:
        entry = self._seen.get(path)
        return entry is not None and now - entry[2] >= self.stable_seconds

    def next_stable_at(self, now: float) -> float | None:
        """The earliest time a path not yet stable becomes stable if it stays unchanged."""
        times = [since + self.stable_seconds for _, _, since in self._seen.values()]
        later = [t for t in times if t > now]
        return min(later) if later else None

    def forget(self, path: Any) -> None:
        self._seen.pop(path, None)

    def retain(self, paths: Iterable[Any]) -> None:
        keep = set(paths)
        for path in [p for p in self._seen if p not in keep]:
            del self._seen[path]


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropFile:
    """A file in the drop folder as stat-ed by a scan, with its sidecar if it has one."""

    path: Path
    size: int
    mtime_ns: int
    sidecar: Path | None = None
    sidecar_sig: tuple[int, int] | None = None  # (size, mtime_ns) of the sidecar
    dev: int = 0  # device and inode, so the upload opens this very file (vodsync.sourcefile)
    ino: int = 0

    @property
    def key(self) -> tuple[str, int, int, tuple[int, int] | None]:
        return (str(self.path), self.size, self.mtime_ns, self.sidecar_sig)


@dataclass(frozen=True)
class DropCandidate:
    """A finished file ready to ingest as `item`. `duplicates` hold other files with the same bytes."""

    path: Path
    sidecar: Path | None
    item: DesiredItem
    digest: str
    file: DropFile
    duplicates: tuple[DropFile, ...] = ()


@dataclass(frozen=True)
class DropFailure:
    """A finished file that cannot become an item, and why (for `failed/NAME.reason.txt`)."""

    path: Path
    sidecar: Path | None
    reason: str


@dataclass
class ScanResult:
    ready: list[DropCandidate] = field(default_factory=list)
    failed: list[DropFailure] = field(default_factory=list)
    waiting: list[Path] = field(default_factory=list)  # still being written (or sidecar is)
    wake_at: float | None = None  # clock time to scan again so a waiting file is taken promptly


class _Failed(Exception):
    """A file's problem, in words for the reason file."""


# --- helpers ---------------------------------------------------------------------------------


def _ext(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name.lstrip(".") else ""


def is_ignored(name: str) -> bool:
    """Names a drop folder never takes (partial, hidden, lock and OS metadata files)."""
    return (
        name.startswith((".", "~"))
        or name.lower().endswith(PARTIAL_SUFFIXES)
        or name.lower() in IGNORED_NAMES
        or name.endswith(REASON_SUFFIX)
    )


def is_sidecar(name: str) -> bool:
    return name.lower().endswith(SIDECAR_SUFFIXES)


def sidecar_names(media_name: str) -> list[str]:
    """Sidecar names for a media file, most specific first: `clip.mp4.yaml`, `clip.mp4.yml`, `clip.yaml`, `clip.yml`."""
    stem = media_name.rsplit(".", 1)[0] if "." in media_name.lstrip(".") else media_name
    names = [media_name + s for s in SIDECAR_SUFFIXES]
    if stem != media_name:
        names += [stem + s for s in SIDECAR_SUFFIXES]
    return names


def folder_label(path: Path) -> str:
    """The item-name segment for a folder: its name, lower-cased, reduced to [a-z0-9._-]."""
    label = re.sub(r"[^a-z0-9._-]+", "-", path.name.lower()).strip("-._")
    return label or "drop"


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_CREAT|O_EXCL fails on any existing name, a symbolic link (even a dangling one) included.
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_plain_file(path: Path) -> bool:
    """A regular file, not a link to one."""
    try:
        return stat.S_ISREG(os.stat(path, follow_symlinks=False).st_mode)
    except OSError:
        return False


class LinkInTheWay(OSError):
    """A destination name in done/ or failed/ is a symbolic link: vodsync never writes through one."""


class _Subfolder:
    """`done/` or `failed/` of a drop folder, opened without following links.

    Whoever can write into a drop folder can plant links there, so nothing is
    written through a path: the subfolder is made (or found) relative to the drop
    folder's descriptor, opened with `O_NOFOLLOW`, and must be a real directory
    owned by vodsync's user or the drop folder's owner. Files are linked or renamed
    into it by descriptor and names created in it with `O_CREAT|O_EXCL|O_NOFOLLOW`,
    so a link planted at a destination fails the move instead of being followed.
    """

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        self.root = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # configured: trusted
        try:
            try:
                os.mkdir(name, 0o777, dir_fd=self.root)
            except FileExistsError:
                pass
            try:
                self.fd = os.open(name, _OPEN_DIR, dir_fd=self.root)
            except OSError as exc:
                raise OSError(exc.errno, f"{name}/ is not a directory (a symbolic link?)") from None
            owner = os.fstat(self.fd).st_uid
            if owner not in (os.geteuid(), os.fstat(self.root).st_uid):
                os.close(self.fd)
                raise OSError(errno.EPERM, f"{name}/ belongs to another user (uid {owner})")
        except BaseException:
            os.close(self.root)
            raise

    def __enter__(self) -> _Subfolder:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        os.close(self.root)

    @property
    def path(self) -> Path:
        return self.folder / self.name

    def is_free(self, name: str) -> bool:
        """Whether nothing is called `name` here; a symbolic link there raises `LinkInTheWay`."""
        try:
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        if stat.S_ISLNK(info.st_mode):
            raise LinkInTheWay(
                errno.EEXIST, f"{self.name}/{name} is a symbolic link; vodsync does not write through links"
            )
        return False

    def move_in(self, src: str, dest: str) -> Path:
        """Move the drop folder's `src` here as `dest`; never replaces anything, never follows a link."""
        try:
            # link() fails with EEXIST instead of replacing, so two movers cannot clobber each other.
            os.link(src, dest, src_dir_fd=self.root, dst_dir_fd=self.fd, follow_symlinks=False)
        except FileExistsError:
            self.is_free(dest)  # a link planted since the check says so
            raise
        except OSError:
            # Filesystems without hard links: check-then-rename. A rename replaces a link planted
            # in between (it never writes through one), and the source is renamed, not copied.
            if not self.is_free(dest):
                raise FileExistsError(errno.EEXIST, f"{self.name}/{dest} exists") from None
            os.rename(src, dest, src_dir_fd=self.root, dst_dir_fd=self.fd)
            return self.path / dest
        os.unlink(src, dir_fd=self.root)
        return self.path / dest

    def create(self, name: str, data: bytes) -> None:
        """Write a new file `name` here; fails if anything (a link included) is already called that."""
        fd = os.open(name, _CREATE_NEW, 0o666, dir_fd=self.fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def read_top(self, name: str, limit: int) -> bytes:
        """At most `limit` bytes of the drop folder's own file `name`, not following a link."""
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self.root)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise OSError(errno.EINVAL, f"{name} is not a regular file")
            return f.read(limit)


# --- the drop folder -------------------------------------------------------------------------


class DropFolder:
    """One configured drop folder. Not thread-safe: the daemon loop owns it.

    `hash_file(path) -> hex digest` (default: read the file); `clock()` returns
    seconds (monotonic is fine: only differences are used); `label` defaults to the
    setting's `label`, else `folder_label(path)`, and must be unique among the daemon's
    drop folders.
    """

    def __init__(
        self,
        settings: DropFolderSettings,
        *,
        hash_file: HashFile = file_digest,
        clock: Clock = time.monotonic,
        label: str | None = None,
    ) -> None:
        self.settings = settings
        self.path = Path(os.path.abspath(settings.path))
        self.label = label or settings.label or folder_label(self.path)
        self.hash_file = hash_file
        self.clock = clock
        self.tracker = StabilityTracker(settings.stable_seconds)
        self.defaults = self._validated_defaults()
        self._digests: dict[tuple[str, int, int], str] = {}
        self._done: set[tuple[str, int, int, tuple[int, int] | None]] = set()
        # Failures that could not be moved to failed/: not reported again until the file changes.
        self._stuck: set[tuple[str, int, int, tuple[int, int] | None]] = set()

    @property
    def origin(self) -> Origin:
        """The origin of this folder's items (their `made_by`), so prune leaves their records alone."""
        return Origin.drop(self.label)

    def _validated_defaults(self) -> dict[str, Any]:
        raw = self.settings.defaults.model_dump(exclude={"title_template"}, exclude_none=True)
        try:
            MediaMetadata.model_validate(raw)
        except ValidationError as exc:
            words = "; ".join(
                f"defaults.{'.'.join(str(p) for p in e['loc'])}: {explain_error(e)}"
                for e in exc.errors(include_url=False)
            )
            raise ConfigError(f"drop folder {self.path}: {words}") from None
        return raw

    # -- scanning ------------------------------------------------------------------------------

    def scan(self) -> ScanResult:
        """Stat the folder's top level; return the finished files as candidates or failures.

        Reads file bytes only to hash files that are stable and not known yet.
        A missing folder yields an empty result (it may be a mount not up yet).
        """
        now = self.clock()
        result = ScanResult()
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            log.warning("drop folder %s does not exist", self.path)
            return result
        except OSError as exc:
            log.warning("cannot list drop folder %s: %s", self.path, exc.strerror or exc)
            return result

        media: list[os.DirEntry[str]] = []
        sidecars: dict[str, os.stat_result] = {}
        present: list[Path] = []
        for entry in sorted(entries, key=lambda e: e.name):
            if is_ignored(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished between listing and stat
            if stat.S_ISDIR(info.st_mode):
                continue  # done/, failed/ and any other subfolder: not ours to take
            path = Path(entry.path)
            present.append(path)
            self.tracker.observe(path, info.st_size, info.st_mtime_ns, now)
            if stat.S_ISLNK(info.st_mode):
                if self.tracker.is_stable(path, now):
                    result.failed.append(
                        DropFailure(path, None, "is a symbolic link; drop the file itself, not a link to it")
                    )
                continue
            if not stat.S_ISREG(info.st_mode):
                continue  # sockets, fifos: nothing to upload, nothing to move
            if is_sidecar(entry.name):
                sidecars[entry.name] = info
            else:
                media.append(entry)
        self.tracker.retain(present)
        self._forget_missing(present)

        stable: list[DropFile] = []
        for entry in media:
            path = Path(entry.path)
            info = entry.stat(follow_symlinks=False)
            sidecar_name = next((n for n in sidecar_names(entry.name) if n in sidecars), None)
            sidecar = self.path / sidecar_name if sidecar_name else None
            sidecar_sig = (
                (sidecars[sidecar_name].st_size, sidecars[sidecar_name].st_mtime_ns) if sidecar_name else None
            )
            file = DropFile(path, info.st_size, info.st_mtime_ns, sidecar, sidecar_sig, info.st_dev, info.st_ino)
            if file.key in self._done or file.key in self._stuck:
                continue
            if not self.tracker.is_stable(path, now) or (
                sidecar is not None and not self.tracker.is_stable(sidecar, now)
            ):
                result.waiting.append(path)
                continue
            stable.append(file)

        by_digest: dict[str, list[tuple[DropFile, DesiredItem]]] = {}
        for file in stable:
            try:
                item, digest = self._build(file)
            except _Failed as exc:
                result.failed.append(DropFailure(file.path, file.sidecar, str(exc)))
                continue
            if item is None:  # changed while being hashed: not finished after all
                result.waiting.append(file.path)
                continue
            by_digest.setdefault(digest, []).append((file, item))
        for digest, group in by_digest.items():
            (first, item), rest = group[0], group[1:]
            result.ready.append(
                DropCandidate(first.path, first.sidecar, item, digest, first, tuple(f for f, _ in rest))
            )
        result.wake_at = self.tracker.next_stable_at(now) if result.waiting else None
        return result

    def _forget_missing(self, present: Sequence[Path]) -> None:
        names = {str(p) for p in present}
        self._done = {k for k in self._done if k[0] in names}
        self._stuck = {k for k in self._stuck if k[0] in names}
        self._digests = {k: v for k, v in self._digests.items() if k[0] in names}

    def _digest(self, file: DropFile) -> str | None:
        key = (str(file.path), file.size, file.mtime_ns)
        digest = self._digests.get(key)
        if digest is None:
            try:
                digest = self.hash_file(str(file.path))
                after = os.stat(file.path, follow_symlinks=False)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise _Failed(f"cannot read the file: {exc.strerror or exc}") from None
            if (after.st_size, after.st_mtime_ns) != (file.size, file.mtime_ns):
                # Still being written after all: the hash is of a half file. Start the window again.
                self.tracker.observe(file.path, after.st_size, after.st_mtime_ns, self.clock())
                return None
            self._digests[key] = digest
        return digest

    def _build(self, file: DropFile) -> tuple[DesiredItem | None, str]:
        sidecar = self._read_sidecar(file.sidecar) if file.sidecar is not None else {}
        kind, business_type = self._kind(file.path.name, sidecar.get("business_type"))
        metadata = self._metadata(file, kind, sidecar)
        digest = self._digest(file)
        if digest is None:
            return None, ""
        options: dict[str, Any] = {}
        if kind is Kind.VIDEO and "template_group_id" in metadata:
            options["template_group_id"] = metadata["template_group_id"]
        if kind is Kind.IMAGE:
            options["image_type"] = "default"
        if kind is Kind.ATTACHED:
            options["business_type"] = business_type
        item = DesiredItem(
            name=f"drop/{self.label}/{digest[:NAME_DIGEST_CHARS]}",
            kind=kind,
            source=str(file.path),
            metadata={k: v for k, v in metadata.items() if k in UPDATABLE_FIELDS[kind]},
            options=options,
            local=LocalFile(str(file.path), file.size, file.mtime_ns, file.dev, file.ino),
            origin=Location(str(file.path)),
            made_by=self.origin,
        )
        return item, digest

    def _kind(self, name: str, business_type: str | None) -> tuple[Kind, str | None]:
        ext = _ext(name)
        shown = f".{ext}" if ext else "no extension"
        if is_playlist(name):
            # A playlist goes up with its segments (vodsync.desired.hls), and a drop folder has no
            # way to say which dropped files belong to it or when the last one is complete.
            raise _Failed("an HLS playlist cannot be dropped alone; name it in a manifest, which "
                          "uploads it with its segments")
        configured = self.settings.kind
        if configured == "auto":
            if business_type is not None:
                configured = "attached"
            elif ext in VIDEO_EXTENSIONS:
                return Kind.VIDEO, None
            elif ext in IMAGE_EXTENSIONS:
                return Kind.IMAGE, None
            elif ext in SUBTITLE_EXTENSIONS:
                return Kind.ATTACHED, "subtitle"
            else:
                raise _Failed(
                    f"cannot tell what {shown} is: this drop folder takes video and audio files "
                    f"({', '.join(sorted(VIDEO_EXTENSIONS))}), images ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                    f"and subtitles ({', '.join(sorted(SUBTITLE_EXTENSIONS))})"
                )
        if configured == "video":
            if ext not in VIDEO_EXTENSIONS:
                raise _Failed(f"{shown} is not a video or audio file, and this drop folder takes only those")
            return Kind.VIDEO, None
        if configured == "image":
            if ext not in IMAGE_EXTENSIONS:
                raise _Failed(f"{shown} is not an image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            return Kind.IMAGE, None
        if business_type is not None:
            if ext not in ATTACHED_EXTENSIONS[business_type]:
                raise _Failed(
                    f"{shown} does not fit business_type {business_type} "
                    f"({', '.join(sorted(ATTACHED_EXTENSIONS[business_type]))})"
                )
            return Kind.ATTACHED, business_type
        for family in _BUSINESS_TYPE_ORDER:
            if ext in ATTACHED_EXTENSIONS[family]:
                return Kind.ATTACHED, family
        raise _Failed(f"{shown} is not a subtitle, watermark or material file")

    def _read_sidecar(self, path: Path) -> dict[str, Any]:
        name = path.name
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_SIDECAR_BYTES + 1)
        except OSError as exc:
            raise _Failed(f"{name}: cannot read the sidecar: {exc.strerror or exc}") from None
        if len(raw) > MAX_SIDECAR_BYTES:
            raise _Failed(f"{name}: a sidecar must be at most {MAX_SIDECAR_BYTES // 1024} KiB")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise _Failed(f"{name}:{line}: is not UTF-8 text") from None
        try:
            data, node = parse_yaml_document(text, fast=False)
        except Exception as exc:  # noqa: BLE001 - any parser/constructor failure is a located problem
            line, words = yaml_error_words(exc)
            raise _Failed(f"{name}:{line or 1}: {words}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise _Failed(
                f"{name}:{node_line(node) or 1}: a sidecar must be a mapping of metadata "
                f"(title, description, tags, cate_id, ...), got {describe_value(data)}"
            )
        try:
            Sidecar.model_validate(data)
        except ValidationError as exc:
            problems = []
            for err in exc.errors(include_url=False):
                loc = err["loc"]
                line = node_line(node, loc, key=err["type"] == "extra_forbidden") or 1
                field_name = ".".join(str(p) for p in loc) or "sidecar"
                words = explain_error(err, expected={"tags": "a list of strings", "cate_id": "an integer"})
                if err["type"] == "extra_forbidden":
                    words = f"unknown field; a sidecar takes {', '.join(Sidecar.model_fields)}"
                problems.append(f"{name}:{line}: {field_name}: {words}")
            raise _Failed("; ".join(problems)) from None
        return data

    def _metadata(self, file: DropFile, kind: Kind, sidecar: dict[str, Any]) -> dict[str, Any]:
        unsupported = ITEM_MODELS[kind.value].unsupported
        bad = sorted(k for k in unsupported if sidecar.get(k) is not None)
        if bad and file.sidecar is not None:
            raise _Failed(f"{file.sidecar.name}: {bad[0]}: {kind.value} files do not take {', '.join(bad)}")
        merged = {k: v for k, v in self.defaults.items() if k not in unsupported}
        # `key: null` in a sidecar means "not set" (the model allows it): defaults still apply.
        merged.update({k: v for k, v in sidecar.items() if k != "business_type" and v is not None})
        if self.defaults.get("tags") and sidecar.get("tags"):
            merged["tags"] = list(dict.fromkeys([*self.defaults["tags"], *sidecar["tags"]]))
        if sidecar.get("title") is None:
            merged["title"] = self._title(file.path)
        if "tags" in merged:
            merged["tags"] = tuple(dict.fromkeys(merged["tags"]))
        return merged

    def _title(self, path: Path) -> str:
        name = path.name
        stem, _, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
        fields = {"stem": stem, "name": name, "ext": ext, "parent": self.path.name, "folder": self.path.name}
        title = self.settings.defaults.title_template.format(**fields)[:MAX_TITLE].strip()
        try:
            MediaMetadata.model_validate({"title": title})
        except ValidationError as exc:
            words = explain_error(exc.errors(include_url=False)[0])
            raise _Failed(
                f"the title {title!r} made from the file name {words}; "
                f"give a title in a sidecar {sidecar_names(name)[-2]}"
            ) from None
        return title

    # -- after an outcome ----------------------------------------------------------------------

    def finish_success(self, candidate: DropCandidate) -> list[Path]:
        """Apply `after:` to the candidate's file(s): keep (remembered), move to done/, or delete.

        Returns where the files went (empty for keep and delete). A file that
        cannot be moved or deleted is logged and remembered as done, so it is
        not offered again until it changes.
        """
        files = (candidate.file, *candidate.duplicates)
        after = self.settings.after
        moved: list[Path] = []
        for file in files:
            self._done.add(file.key)
            if after == "keep":
                continue
            try:
                if after == "move":
                    moved.append(self._move_pair(file.path, file.sidecar, DONE_DIR, exclude=files))
                else:
                    self._delete_pair(file.path, file.sidecar, exclude=files)
            except OSError as exc:
                log.warning(
                    "ingested %s but could not %s it: %s",
                    file.path,
                    after,
                    exc.strerror or exc,
                    extra={"item": candidate.item.name},
                )
        return moved

    def finish_failure(
        self, target: DropCandidate | DropFailure | Path, reason: str | None = None
    ) -> Path | None:
        """Move the file (its duplicates, its sidecar) to failed/ and write `NAME.reason.txt`; return where it went."""
        if isinstance(target, DropCandidate):
            files = [(f.path, f.sidecar) for f in (target.file, *target.duplicates)]
        elif isinstance(target, DropFailure):
            files = [(target.path, target.sidecar)]
            reason = reason or target.reason
        else:
            path = Path(target)
            sidecar = next(
                (self.path / n for n in sidecar_names(path.name) if _is_plain_file(self.path / n)), None
            )
            files = [(path, sidecar)]
        reason = reason or "failed"
        first: Path | None = None
        for path, sidecar in files:
            try:
                dest = self._move_pair(path, sidecar, FAILED_DIR, exclude=(), reason=reason)
            except OSError as exc:
                log.error("could not move %s to %s/: %s", path, FAILED_DIR, exc.strerror or exc)
                self._remember_stuck(path, sidecar)
                continue
            first = first or dest
        return first

    def _remember_stuck(self, path: Path, sidecar: Path | None) -> None:
        try:
            info = os.stat(path, follow_symlinks=False)
            sig = None
            if sidecar is not None:
                s = os.stat(sidecar)
                sig = (s.st_size, s.st_mtime_ns)
        except OSError:
            return
        self._stuck.add((str(path), info.st_size, info.st_mtime_ns, sig))

    def _sidecar_shared(self, sidecar: Path, exclude: Iterable[Any]) -> bool:
        """Whether another media file still in the folder uses this sidecar (`clip.yaml` for clip.mp4 and clip.srt)."""
        leaving = {str(getattr(f, "path", f)) for f in exclude}
        try:
            names = sorted(os.listdir(self.path))
        except OSError:
            return False
        present = set(names)
        for name in names:
            if is_ignored(name) or is_sidecar(name) or str(self.path / name) in leaving:
                continue
            if (self.path / name).is_dir():
                continue
            mine = next((n for n in sidecar_names(name) if n in present), None)
            if mine == sidecar.name:
                return True
        return False

    def _move_pair(
        self,
        path: Path,
        sidecar: Path | None,
        subfolder: str,
        *,
        exclude: Iterable[Any],
        reason: str | None = None,
    ) -> Path:
        """Move a file (and its sidecar) into `subfolder` under one free name, with `NAME.reason.txt` if given.

        The name is chosen so that the file, its sidecar and its reason all land on free names
        (`clip (2).mp4` goes with `clip (2).yaml`); a symbolic link at any of them fails the move.
        """
        if path.parent != self.path:
            raise OSError(errno.EINVAL, f"{path} is not in the drop folder's top level")
        shared = sidecar is not None and self._sidecar_shared(sidecar, [path, *exclude])
        if sidecar is not None and not os.path.lexists(sidecar):
            sidecar = None
        media_stem = path.name.rpartition(".")[0] or path.name

        def sidecar_dest(dest: str) -> str:
            assert sidecar is not None
            if sidecar.name.startswith(path.name):
                return dest + sidecar.name[len(path.name) :]
            return dest[: len(dest) - (len(path.name) - len(media_stem))] + sidecar.name[len(media_stem) :]

        with _Subfolder(self.path, subfolder) as sub:
            dest = self._free_pair_name(sub, path.name, sidecar_dest if sidecar is not None else None, reason)
            moved = sub.move_in(path.name, dest)
            if sidecar is not None:
                if shared:
                    # Another file still needs it: leave it, and keep a copy with the moved file for context.
                    try:
                        sub.create(sidecar_dest(dest), sub.read_top(sidecar.name, MAX_SIDECAR_BYTES))
                    except OSError as exc:
                        log.warning("could not copy sidecar %s: %s", sidecar, exc.strerror or exc)
                else:
                    sub.move_in(sidecar.name, sidecar_dest(dest))
            if reason is not None:
                try:
                    sub.create(dest + REASON_SUFFIX, (reason.rstrip() + "\n").encode("utf-8"))
                except OSError as exc:
                    log.error("could not write the reason for %s: %s", moved, exc.strerror or exc)
        return moved

    @staticmethod
    def _free_pair_name(
        sub: _Subfolder, name: str, sidecar_dest: Callable[[str], str] | None, reason: str | None
    ) -> str:
        stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
        for n in range(1, 10_000):
            candidate = name if n == 1 else f"{stem} ({n}){dot}{ext}"
            names = [candidate]
            if sidecar_dest is not None:
                names.append(sidecar_dest(candidate))
            if reason is not None:
                names.append(candidate + REASON_SUFFIX)
            if all(sub.is_free(n) for n in names):  # raises LinkInTheWay on a planted link
                return candidate
        raise OSError(errno.EEXIST, f"no free name for {name} in {sub.name}/")

    def _delete_pair(self, path: Path, sidecar: Path | None, *, exclude: Iterable[Any]) -> None:
        shared = sidecar is not None and self._sidecar_shared(sidecar, [path, *exclude])
        path.unlink(missing_ok=True)
        if sidecar is not None and not shared:
            sidecar.unlink(missing_ok=True)


def drop_folders(settings: Sequence[DropFolderSettings], **kwargs: Any) -> list[DropFolder]:
    """One `DropFolder` per setting; refuses two folders with the same label (their item names would collide)."""
    folders = [DropFolder(s, **kwargs) for s in settings]
    check_labels(folders)
    return folders


def check_labels(folders: Iterable[DropFolder]) -> None:
    """Raise `ConfigError` if two folders (different paths) share a label: their item names would collide."""
    seen: dict[str, Path] = {}
    for folder in folders:
        if seen.setdefault(folder.label, folder.path) != folder.path:
            raise ConfigError(
                f"drop folders {seen[folder.label]} and {folder.path} would both be labelled "
                f"{folder.label!r} in item names; give one of them another `label:`"
            )
