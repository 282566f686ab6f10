"""Manifest loading for the daemon: a broken file is reported and skipped, never fatal.

`vodsync apply` refuses to run when any manifest is invalid. The daemon cannot
stop syncing everything because one editor pushed a typo, so it loads the
files that are valid and reports the rest. The caller must then not prune:
items of a skipped file are missing from the desired set only because their
file could not be read, not because they were removed.

Built on the public loader: the whole tree is loaded in one go (the usual
case, and the only one that pays nothing extra); only when that fails is every
file without a problem loaded on its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vodsync.desired.items import DesiredItem, Move
from vodsync.desired.loader import MANIFEST_SUFFIXES, load_manifest_set
from vodsync.desired.paths import default_roots
from vodsync.errors import ManifestError, display_path


@dataclass(frozen=True)
class LoadedManifests:
    items: list[DesiredItem]
    error: ManifestError | None = None  # the problems of the files left out
    skipped: tuple[str, ...] = ()  # files left out, relative to the manifests directory
    moves: tuple[Move, ...] = ()  # the `moved:` entries of the files loaded

    @property
    def complete(self) -> bool:
        return self.error is None


def manifest_files(root: Path) -> list[Path]:
    """The files the loader reads under `root`: `*.yaml`/`*.yml`, hidden files and directories left out."""
    if root.is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(dirpath, f) for f in sorted(filenames) if f.endswith(MANIFEST_SUFFIXES) and not f.startswith(".")
        )
    return found


def load_lenient(root: Path, *, roots: Sequence[Path] | None = None) -> LoadedManifests:
    """Items of every valid manifest under `root`, and a `ManifestError` naming the files left out."""
    root = Path(root)
    try:
        loaded = load_manifest_set(root, roots=roots)
        return LoadedManifests(loaded.items, moves=tuple(loaded.moves))
    except ManifestError as exc:
        error = exc
    if not root.is_dir():
        return LoadedManifests([], error, (str(root),))
    broken = {p.location.file for p in error.problems}
    confine_to = list(roots) if roots else default_roots(root)
    items: list[DesiredItem] = []
    moves: list[Move] = []
    for path in manifest_files(root):
        rel = display_path(path)  # as the loader names it in a ManifestProblem
        if rel in broken:
            continue
        try:
            one = load_manifest_set(path, roots=confine_to)
            items.extend(one.items)
            moves.extend(one.moves)
        except ManifestError as again:  # changed between the two reads: report it with the rest
            broken.add(rel)
            error = ManifestError([*error.problems, *again.problems])
    items.sort(key=lambda item: item.name)
    return LoadedManifests(items, error, tuple(sorted(broken)), tuple(moves))
