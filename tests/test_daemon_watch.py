"""ChangeWatcher: the debounce with a fake clock (no sleeps), and real inotify delivery waited on with Events."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from vodsync.daemon.watch import ChangeWatcher, ignored_path


class Recorder:
    def __init__(self) -> None:
        self.calls: list[set[Path]] = []
        self.event = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, paths: set[Path]) -> None:
        with self.lock:
            self.calls.append(set(paths))
        self.event.set()

    def wait_for(self, predicate, timeout: float = 10) -> bool:
        """Wait (on the Event, not by polling a clock) until the delivered paths satisfy `predicate`."""
        while True:
            with self.lock:
                seen = set().union(*self.calls) if self.calls else set()
            if predicate(seen):
                return True
            self.event.clear()
            if not self.event.wait(timeout):
                return False


def test_burst_is_coalesced_into_one_callback() -> None:
    rec = Recorder()
    w = ChangeWatcher([], rec, debounce_seconds=0.5, clock=lambda: 0.0)
    for i in range(50):
        w.notify(Path(f"/m/{i}.yaml"), now=100 + i * 0.01)  # 50 events within 0.5 s
    assert w.pump(now=100.9) == set()  # 0.41 s after the last event: still settling
    delivered = w.pump(now=101.0)
    assert len(delivered) == 50
    assert len(rec.calls) == 1
    assert w.pump(now=200) == set() and len(rec.calls) == 1
    assert w.deadline() is None


def test_each_event_moves_the_deadline_but_max_delay_caps_it() -> None:
    rec = Recorder()
    w = ChangeWatcher([], rec, debounce_seconds=1, max_delay_seconds=5, clock=lambda: 0.0)
    t = 0.0
    w.notify(Path("/d/big.mov"), now=t)
    while t < 4.5:  # a file written for a long time: an event every 0.5 s
        t += 0.5
        w.notify(Path("/d/big.mov"), now=t)
        assert w.pump(now=t) == set()
    assert w.deadline() == 5.0  # first event + max_delay, earlier than last + debounce (5.5)
    assert w.pump(now=5.0) == {Path("/d/big.mov")}


def test_failing_callback_does_not_break_the_watcher() -> None:
    def boom(paths: set[Path]) -> None:
        raise RuntimeError("nope")

    w = ChangeWatcher([], boom, debounce_seconds=0.1, clock=lambda: 0.0)
    w.notify(Path("/x"), now=0)
    assert w.pump(now=1) == {Path("/x")}
    w.notify(Path("/y"), now=2)
    assert w.pump(now=3) == {Path("/y")}


def test_ignored_paths() -> None:
    root = Path("/srv/manifests")
    assert ignored_path(root / ".git" / "index", root)
    assert ignored_path(root / ".vodsync" / "state.db-wal", root)
    assert ignored_path(root / "sub" / ".intro.yaml.swp", root)
    assert ignored_path(root / "movie.mp4.part", root)
    assert ignored_path(root / "~lock.yaml", root)
    assert not ignored_path(root / "sub" / "intro.yaml", root)
    # A hidden directory above the watched root does not hide everything below it.
    hidden_root = Path("/home/u/.config/vodsync/manifests")
    assert not ignored_path(hidden_root / "a.yaml", hidden_root)


def test_real_inotify_write_and_rename_deliver(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    (manifests / "nested").mkdir(parents=True)
    drop = tmp_path / "drop"
    drop.mkdir()
    rec = Recorder()
    with ChangeWatcher([manifests], rec, flat_paths=[drop], debounce_seconds=0.05) as w:
        assert w.missing == []
        (manifests / "nested" / "a.yaml").write_text("media: []\n")
        (drop / "clip.mp4.part").write_bytes(b"x" * 1000)
        (drop / "clip.mp4.part").rename(drop / "clip.mp4")
        target = {manifests / "nested" / "a.yaml", drop / "clip.mp4"}
        assert rec.wait_for(lambda seen: target <= seen), rec.calls
        seen = set().union(*rec.calls)
        assert not any(p.name.endswith(".part") for p in seen)


def test_reading_files_does_not_trigger(tmp_path: Path) -> None:
    """Hashing a drop file opens and reads it; that must not wake the loop (or every scan would)."""
    drop = tmp_path / "drop"
    drop.mkdir()
    media = drop / "clip.mp4"
    media.write_bytes(b"y" * 100)
    # atime ahead of mtime, so a relatime mount does not update it on read (that is an IN_ATTRIB
    # "modified" event, which rightly counts); set before watching starts.
    st = media.stat()
    os.utime(media, ns=(st.st_mtime_ns + 10**9, st.st_mtime_ns))
    rec = Recorder()
    with ChangeWatcher([], rec, flat_paths=[drop], debounce_seconds=0.05):
        media.read_bytes()
        media.read_bytes()
        # inotify delivers in order: by the time this write arrives, events from the reads would have too.
        (drop / "marker.mp4").write_bytes(b"z")
        assert rec.wait_for(lambda seen: drop / "marker.mp4" in seen)
        assert media not in set().union(*rec.calls), rec.calls


def test_flat_paths_are_not_recursive_and_missing_dirs_are_reported(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    (drop / "done").mkdir(parents=True)
    rec = Recorder()
    with ChangeWatcher([tmp_path / "nope"], rec, flat_paths=[drop], debounce_seconds=0.05) as w:
        assert w.missing == [tmp_path / "nope"]
        (drop / "done" / "old.mp4").write_bytes(b"a")
        (drop / "new.mp4").write_bytes(b"b")
        assert rec.wait_for(lambda seen: drop / "new.mp4" in seen)
        assert drop / "done" / "old.mp4" not in set().union(*rec.calls)


def test_stop_is_idempotent_and_quick(tmp_path: Path) -> None:
    w = ChangeWatcher([tmp_path], Recorder(), debounce_seconds=60)
    w.start()
    w.notify(tmp_path / "x")  # pending for a minute: stop must not wait for it
    w.stop()
    w.stop()


@pytest.mark.parametrize("debounce", [0.0, 0.01])
def test_zero_or_tiny_debounce(debounce: float) -> None:
    rec = Recorder()
    w = ChangeWatcher([], rec, debounce_seconds=debounce, clock=lambda: 0.0)
    w.notify(Path("/a"), now=1)
    assert w.pump(now=1 + debounce) == {Path("/a")}
