"""Manifest loading for the daemon: a broken file is reported and skipped, never fatal; an edit of
one file re-reads that file only.

`vodsync apply` refuses to run when any manifest is invalid. The daemon cannot
stop syncing everything because one editor pushed a typo, so it loads the
files that are valid and reports the rest. The caller must then not prune:
items of a skipped file are missing from the desired set only because their
file could not be read, not because they were removed.

`ManifestCache` keeps each file's parsed result (`FileManifest`). A reload
given the paths an event named re-reads those files, and any other file whose
size, mtime or inode moved (a rename, a `git checkout`), drops the files that
are gone, and runs the checks across files (duplicate names, `moved:`) over the
cached results and a count of each name kept up to date file by file. When every
path named is a manifest file, the root is not walked again (a media tree under
the manifests may be large); any other path (a directory, `.git/...`) walks it. It says which item names may have changed (`changed`): those of
the files read again, before and after, and those of files whose validity
flipped (a duplicate name added in one file breaks the other too). A reload
without paths reads every file (the daemon's periodic full pass).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from vodsync.desired.items import DesiredItem, Move
from vodsync.desired.loader import (
    MANIFEST_SUFFIXES,
    FileManifest,
    ManifestReader,
    cross_file_problems,
    cyclic_gc_paused,
    manifest_error,
    name_counts,
)
from vodsync.errors import ManifestError, ManifestProblem


@dataclass(frozen=True)
class LoadedManifests:
    items: list[DesiredItem]
    error: ManifestError | None = None  # the problems of the files left out
    skipped: tuple[str, ...] = ()  # files left out, relative to the manifests directory
    moves: tuple[Move, ...] = ()  # the `moved:` entries of the files loaded
    # Item names (and `moved:` names) whose desired state may differ from the previous load;
    # None: any (every file was read).
    changed: frozenset[str] | None = None

    @property
    def complete(self) -> bool:
        return self.error is None


Signature = tuple[int, int, int] | None  # size, mtime_ns, inode; None: could not stat


def _signature(path: Path) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _names(one: FileManifest) -> set[str]:
    return {name for name, _ in one.names} | {n for m in one.moves for n in (m.old, m.new)}


class ManifestCache:
    """Each manifest file's last parsed result; see the module docstring. Not thread-safe (the
    daemon's loop thread owns it). `reader` builds the `ManifestReader` (tests count its reads)."""

    def __init__(
        self,
        root: Path,
        *,
        roots: Sequence[Path] | None = None,
        reader: Callable[[Path, Sequence[Path] | None], ManifestReader] = ManifestReader,
    ) -> None:
        self.root = Path(root)
        self.roots = roots
        self._reader = reader
        self._files: dict[Path, tuple[Signature, FileManifest]] = {}
        self._broken: set[Path] = set()
        self._counts: Counter[str] = Counter()  # how often each name is defined, over every file
        self._listing: tuple[ManifestProblem, ...] = ()  # problems of the last walk of the root

    def load(self, touched: Collection[Path] | None = None) -> LoadedManifests:
        """Re-read every file (`touched` None), or the files `touched` names and those that moved."""
        with cyclic_gc_paused():
            return self._load(None if touched is None else {Path(os.path.abspath(p)) for p in touched})

    def _load(self, touched: set[Path] | None) -> LoadedManifests:
        reader = self._reader(self.root, self.roots)  # a fresh confiner: symlinks may have moved
        old = self._files
        if touched is not None and old and self.root.is_dir() and all(map(self._names_a_file, touched)):
            # Every change named a manifest file: the last listing, give or take those, is the listing
            # (a large media tree under the manifests is not walked for one edit).
            listing = list(self._listing)
            paths = [p for p in [*old, *sorted(touched - old.keys())] if p not in touched or p.is_file()]
        else:
            listing = []
            paths = reader.files(listing)
            self._listing = tuple(listing)
        fresh: dict[Path, tuple[Signature, FileManifest]] = {}
        changed: set[str] | None = None if touched is None else set()
        counts = self._counts
        for path in paths:
            key = Path(os.path.abspath(path))
            signature = _signature(path)
            kept = old.get(key)
            if touched is not None and kept is not None and key not in touched and kept[0] == signature:
                fresh[key] = kept
                continue
            one = reader.read(path)
            fresh[key] = (signature, one)
            if changed is not None:
                changed |= _names(one) | (_names(kept[1]) if kept else set())
                _recount(counts, kept[1] if kept else None, one)
        if changed is not None:
            for key in old.keys() - fresh.keys():  # removed files: their items are gone
                changed |= _names(old[key][1])
                _recount(counts, old[key][1], None)
        self._files = fresh
        files = [one for _, one in fresh.values()]
        if changed is None:
            counts = self._counts = name_counts(files)
        problems = [
            *listing,
            *(p for one in files for p in one.problems),
            *cross_file_problems(files, counts),
        ]
        broken_rels = {p.location.file for p in problems}
        broken = {key for key, (_, one) in fresh.items() if one.rel in broken_rels}
        if changed is not None:
            for key in broken ^ self._broken:  # valid again, or newly broken by another file's edit
                if key in fresh:
                    changed |= _names(fresh[key][1])
        self._broken = broken
        valid = [one for key, (_, one) in fresh.items() if key not in broken]
        items = [item for one in valid for item in one.items]
        items.sort(key=lambda item: item.name)
        moves = tuple(m for one in valid for m in one.moves)
        error = manifest_error(problems) if problems else None
        return LoadedManifests(
            items, error, tuple(sorted(broken_rels)), moves, None if changed is None else frozenset(changed)
        )

    def _names_a_file(self, path: Path) -> bool:
        """Whether `path` is (or was) a manifest file under the root: not a directory, a YAML name,
        no hidden part."""
        try:
            parts = path.relative_to(os.path.abspath(self.root)).parts
        except ValueError:
            return False
        return (
            bool(parts)
            and parts[-1].endswith(MANIFEST_SUFFIXES)
            and not any(part.startswith(".") for part in parts)
            and not path.is_dir()
        )


def _recount(counts: Counter[str], before: FileManifest | None, after: FileManifest | None) -> None:
    """Keep `counts` (how often each name is defined) up to date when one file changes."""
    if before is not None:
        for name, _ in before.names:
            counts[name] -= 1
            if counts[name] <= 0:
                del counts[name]
    if after is not None:
        counts.update(name for name, _ in after.names)


def load_lenient(root: Path, *, roots: Sequence[Path] | None = None) -> LoadedManifests:
    """Items of every valid manifest under `root`, and a `ManifestError` naming the files left out."""
    return ManifestCache(root, roots=roots).load()
