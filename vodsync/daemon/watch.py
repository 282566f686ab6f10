"""File-system change notification for the daemon: watchdog events -> one debounced "something changed".

Owns `ChangeWatcher`: a watchdog `Observer` (inotify on Linux, so nothing is
polled) over the manifest directories (recursively) and the drop folders (top
level only; their `done/` and `failed/` subfolders are the daemon's own
output), and the debounce that coalesces a burst — `git pull` touching 300
manifests, a copy writing a file in 4 MiB chunks — into one callback with the
set of changed paths.

The debounce is trailing (fire `debounce_seconds` after the last event) with a
ceiling (`max_delay_seconds` after the first), so a file written for ten
minutes still wakes the loop now and then. It is driven either by `pump(now)`
(tests, or a loop that owns its clock) or by the delivery thread `start()`
runs, which sleeps on a condition variable until an event or a deadline.

Only events that can mean new or changed content count: `opened` and
`closed_no_write` (what hashing a drop file produces) are dropped, or every
scan would trigger the next one; so are hidden paths (`.git`, `.vodsync/`
with the state database, editor swap files) and partial downloads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger(__name__)

CONTENT_EVENTS = frozenset(
    {EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED, EVENT_TYPE_CLOSED}
)
PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".swp", ".swx")


def ignored_path(path: Path, root: Path) -> bool:
    """True for paths whose changes never matter: hidden components under `root`, `~*`, partial files."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = (path.name,)
    if any(p.startswith(".") for p in parts):
        return True
    name = path.name
    return name.startswith("~") or name.endswith(PARTIAL_SUFFIXES)


def _fs_path(value: str | bytes) -> Path:
    return Path(os.fsdecode(value))


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: ChangeWatcher, root: Path) -> None:
        self.watcher = watcher
        self.root = root

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in CONTENT_EVENTS:
            return
        paths = [_fs_path(event.src_path)]
        if event.event_type == EVENT_TYPE_MOVED and event.dest_path:
            paths.append(_fs_path(event.dest_path))
        relevant = [p for p in paths if not self.watcher.ignore(p, self.root)]
        if relevant:
            self.watcher.notify(*relevant)


class ChangeWatcher:
    """Watches directories and calls `on_change(paths)` once per burst of changes.

    `paths` are watched recursively, `flat_paths` only at their top level.
    Directories that do not exist when `start()` runs are logged and listed in
    `missing` (the caller rescans them on its interval anyway).
    """

    def __init__(
        self,
        paths: Iterable[Path],
        on_change: Callable[[set[Path]], None],
        *,
        flat_paths: Iterable[Path] = (),
        debounce_seconds: float = 0.5,
        max_delay_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        ignore: Callable[[Path, Path], bool] = ignored_path,
    ) -> None:
        self.recursive_paths = [Path(p) for p in paths]
        self.flat_paths = [Path(p) for p in flat_paths]
        self.on_change = on_change
        self.debounce_seconds = debounce_seconds
        self.max_delay_seconds = max(max_delay_seconds, debounce_seconds)
        self.ignore = ignore
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: set[Path] = set()
        self._first: float | None = None
        self._last: float | None = None
        self._stopping = False
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._thread: threading.Thread | None = None
        self.missing: list[Path] = []

    # -- events in -------------------------------------------------------------------------

    def notify(self, *paths: Path, now: float | None = None) -> None:
        """Record changed paths (the watchdog handler calls this; tests may too)."""
        now = self._clock() if now is None else now
        with self._cond:
            if not self._pending:
                self._first = now
            self._pending.update(paths)
            self._last = now
            self._cond.notify_all()

    def deadline(self) -> float | None:
        """When the pending burst is due (clock time), or None if nothing is pending."""
        with self._cond:
            return self._deadline()

    def _deadline(self) -> float | None:
        if not self._pending or self._first is None or self._last is None:
            return None
        return min(self._last + self.debounce_seconds, self._first + self.max_delay_seconds)

    # -- changes out -----------------------------------------------------------------------

    def pump(self, now: float | None = None) -> set[Path]:
        """Deliver the pending burst if it is due; return what was delivered (empty if nothing)."""
        now = self._clock() if now is None else now
        with self._cond:
            due = self._deadline()
            if due is None or now < due:
                return set()
            changed, self._pending = self._pending, set()
            self._first = self._last = None
        try:
            self.on_change(changed)
        except Exception:  # a failing callback must not kill the watcher thread
            log.exception("change callback failed")
        return changed

    def _deliver_forever(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._pending:
                    self._cond.wait()
                if self._stopping:
                    return
                due = self._deadline()
                remaining = (due - self._clock()) if due is not None else 0
                if remaining > 0:
                    # Woken early by another event (the deadline moves) or by stop(): re-check.
                    self._cond.wait(remaining)
                    continue
            self.pump()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._observer is not None:
            return
        observer = Observer()
        self.missing = []
        for paths, recursive in ((self.recursive_paths, True), (self.flat_paths, False)):
            for path in paths:
                if not path.is_dir():
                    log.warning("not watching %s: no such directory", path)
                    self.missing.append(path)
                    continue
                root = Path(os.path.abspath(path))
                observer.schedule(_Handler(self, root), str(root), recursive=recursive)
        with self._cond:
            self._stopping = False
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._deliver_forever, name="vodsync-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; a burst still pending is dropped (the loop rescans on its interval)."""
        observer, thread = self._observer, self._thread
        self._observer = self._thread = None
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> ChangeWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
