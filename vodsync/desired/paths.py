"""Confinement of local paths named in manifests to the allowed roots (a security boundary).

A manifest may come from an untrusted pull request. If it could name any local
file, `vodsync apply` in CI would upload `../../etc/shadow` or `~/.ssh/id_rsa`
to a VOD account the attacker can read. So every local path is resolved with
`os.path.realpath` (following `..` and every symlink) and must land inside one
of the allowed roots: by default the manifests' repository root (the nearest
ancestor of the manifests directory holding `.git`, else that directory), or
the configured `roots`.

`PathConfiner` caches the resolution of directories, so confining 100,000 files
costs about one `lstat` each rather than one per path component.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from vodsync.errors import PathNotAllowed


def repository_root(start: Path) -> Path:
    """The nearest ancestor of `start` (itself included) that contains `.git`, else `start`; real path."""
    here = Path(os.path.realpath(start))
    for candidate in (here, *here.parents):
        if os.path.lexists(candidate / ".git"):
            return candidate
    return here


def default_roots(manifests: Path) -> list[Path]:
    """The roots local paths may live under when none are configured: the manifests' repository."""
    base = manifests if os.path.isdir(manifests) else manifests.parent
    return [repository_root(base)]


class PathConfiner:
    """Resolves local paths and refuses any that end outside the allowed roots."""

    def __init__(self, roots: Iterable[Path | str]) -> None:
        self.roots: tuple[str, ...] = tuple(dict.fromkeys(os.path.realpath(os.fspath(r)) for r in roots))
        if not self.roots:
            raise ValueError("PathConfiner needs at least one root")
        self._real_dirs: dict[str, str] = {}
        # str.startswith takes a tuple: one C call instead of a Python loop per path.
        self._prefixes = tuple(r if r.endswith(os.sep) else r + os.sep for r in self.roots)

    def describe_roots(self) -> str:
        return ", ".join(self.roots)

    def allows(self, real: str) -> bool:
        return real.startswith(self._prefixes) or real in self.roots

    def _real_dir(self, directory: str) -> str:
        real = self._real_dirs.get(directory)
        if real is None:
            real = self._real_dirs[directory] = os.path.realpath(directory)
        return real

    def resolve(self, base_dir: str, raw: str) -> tuple[str, os.stat_result | None]:
        """Resolve `raw` (relative to `base_dir`) to a real absolute path inside the roots.

        Returns the path and the `lstat` of it when it exists and is not a symlink
        (so callers need no second system call), else None. Raises `PathNotAllowed`.
        """
        # No `~` expansion: a manifest names files of the repository, not of whoever runs vodsync.
        joined = os.path.join(base_dir, raw)
        head, tail = os.path.split(joined)
        info: os.stat_result | None = None
        if tail in ("", ".", ".."):
            real = os.path.realpath(joined)
        else:
            real = os.path.join(self._real_dir(head), tail)
            try:
                info = os.lstat(real)
            except (OSError, ValueError):
                info = None
            if info is not None and stat.S_ISLNK(info.st_mode):
                real, info = os.path.realpath(real), None
        if not self.allows(real):
            raise PathNotAllowed(
                f"{raw!r} resolves to {real}, outside the allowed roots ({self.describe_roots()}); "
                "local files must live inside the repository or a configured root"
            )
        return real, info

