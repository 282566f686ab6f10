"""Tests of the state file: round trips, atomicity, permissions, the writer lock, crashes, full disks."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vodsync.errors import StateError, StateLocked
from vodsync.state.store import SCHEMA_VERSION, Record, RecordStatus, StateStore


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now



def cached_hashes(path: Path) -> dict[tuple[str, int, int], str]:
    """The whole hash cache of the state file at `path`, read directly (nothing in vodsync needs it all)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {(p, s, m): d for p, s, m, d in con.execute("SELECT path, size, mtime_ns, digest FROM hashes")}
    finally:
        con.close()

def full_record(name: str = "intro") -> Record:
    """A record with every field set to something other than its default."""
    return Record(
        name=name,
        kind="video",
        status=RecordStatus.PROCESSING,
        source="/media/intro.mp4",
        remote_id="vid-123",
        reference_id="ref-abc",
        job_id="job-9",
        content_hash="ab" * 32,
        size=1234567,
        mtime_ns=1_700_000_000_123_456_789,
        metadata={"title": "Intro", "description": "Ünïcode ✓", "tags": ("a", "b"), "cate_id": 42,
                  "cover_url": "https://example.com/c.jpg"},
        options={"template_group_id": "tg-1", "storage_location": "out-1.oss", "nested": {"x": [1, 2]}},
        remote_status="Transcoding",
        intent={"op": "create", "token": "tok-1", "at": 1_700_000_000.5},
        origin="drop:/srv/drop",
        protect=True,
        attempts=3,
        next_attempt_at=1_700_000_100.25,
        last_result="failed: Throttling.User",
        last_error="Throttling.User: slow down",
        updated_at=0.0,
    )  # fmt: skip


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "vodsync.db"


# -- records ------------------------------------------------------------------------------------


def test_record_normalises_lists_and_status() -> None:
    a = Record("n", "video", "ready", "/p", metadata={"tags": ["x", "y"]})  # type: ignore[arg-type]
    b = Record("n", "video", RecordStatus.READY, "/p", metadata={"tags": ("x", "y")})
    assert a == b and a.status is RecordStatus.READY
    mine = {"title": "t"}
    c = Record("n", "video", RecordStatus.READY, "/p", metadata=mine)
    mine["title"] = "changed"
    assert c.metadata == {"title": "t"}  # copied, not aliased
    assert c.replace(attempts=2).attempts == 2
    with pytest.raises(ValueError):
        Record("n", "video", "bogus", "/p")  # type: ignore[arg-type]


def test_a_record_read_back_takes_no_more_room_than_one_built(state_path: Path) -> None:
    """Records read from the state keep their fields in the table of keys every record shares, as
    one built by Record(...) does, not in a dict of their own (~200 bytes more a record: ~190 MiB
    in a no-op plan over 1,000,000 items)."""
    built = full_record()
    with StateStore.open(state_path) as store:
        store.put(built)
        read = store.records()["intro"]
    assert read == built.replace(updated_at=read.updated_at)
    assert list(vars(read)) == list(vars(built))
    assert sys.getsizeof(vars(read)) <= sys.getsizeof(vars(built))


# -- hash cache and meta ---------------------------------------------------------------------------


def test_hash_cache(state_path: Path) -> None:
    with StateStore.open(state_path) as store:
        assert store.cached_hash("/a.mp4", 10, 100) is None
        store.remember_hash("/a.mp4", 10, 100, "h1")
        store.remember_hash("/b.mp4", 20, 200, "h2")
        assert store.cached_hash("/a.mp4", 10, 100) == "h1"
        assert store.cached_hash("/a.mp4", 10, 101) is None  # touched
        assert store.cached_hash("/a.mp4", 11, 100) is None  # resized
        store.remember_hash("/a.mp4", 11, 101, "h3")  # a new version replaces the old one
        assert store.cached_hash("/a.mp4", 10, 100) is None
        assert cached_hashes(store.path) == {("/a.mp4", 11, 101): "h3", ("/b.mp4", 20, 200): "h2"}
    with StateStore.open(state_path, readonly=True) as store:
        assert store.cached_hash("/b.mp4", 20, 200) == "h2"


def test_meta_and_schema_version(state_path: Path) -> None:
    with StateStore.open(state_path) as store:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert store.get_meta("ledger") is None
        store.set_meta("ledger", '{"a": 1}')
        assert store.get_meta("ledger") == '{"a": 1}'
        with pytest.raises(StateError):
            store.set_meta("schema_version", "2")
    conn = sqlite3.connect(state_path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="newer"):
        StateStore.open(state_path)
    with pytest.raises(StateError, match="newer"):
        StateStore.open(state_path, readonly=True)
    with pytest.raises(StateError, match="newer"):
        StateStore.open(state_path)  # a StateLocked here would mean the failed open kept its lock


def test_foreign_and_garbage_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StateError, match="not a SQLite database"):
        StateStore.open(garbage)
    with pytest.raises(StateError):
        StateStore.open(garbage, readonly=True)
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="not a vodsync state file"):
        StateStore.open(foreign)


def test_closed_store_raises_state_error(state_path: Path) -> None:
    store = StateStore.open(state_path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StateError, match="closed"):
        store.records()
    with pytest.raises(StateError, match="closed"):
        store.put(Record("a", "video", RecordStatus.READY, "/a"))


# -- permissions ---------------------------------------------------------------------------------


def test_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a typical umask that would give 0644 files and 0755 dirs
    try:
        path = tmp_path / "a" / "b" / "state.db"
        store = StateStore.open(path)
        store.put(Record("a", "video", RecordStatus.READY, "/a"))
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}.lock")):
            assert p.exists(), p
            assert mode_of(p) == 0o600, (p, oct(mode_of(p)))
        assert mode_of(tmp_path / "a") == 0o700 and mode_of(tmp_path / "a" / "b") == 0o700
        assert Path(f"{path}.lock").read_text().strip() == str(os.getpid())
        store.close()
        # a state file someone loosened is tightened again by the next writer
        os.chmod(path, 0o644)
        StateStore.open(path).close()
        assert mode_of(path) == 0o600
    finally:
        os.umask(old)


# -- locking -------------------------------------------------------------------------------------

_TRY_OPEN = textwrap.dedent(
    """
    import sys
    from vodsync.errors import StateLocked
    from vodsync.state.store import StateStore
    try:
        StateStore.open(sys.argv[1]).close()
    except StateLocked as exc:
        print("locked", exc.pid)
        print(exc)
    else:
        print("opened")
    """
)


def try_open_in_another_process(path: Path) -> list[str]:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _TRY_OPEN, str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    assert time.monotonic() - started < 30  # failed fast, did not wait for the lock
    return out.stdout.splitlines()


def test_second_process_gets_state_locked_naming_the_pid(state_path: Path) -> None:
    store = StateStore.open(state_path)
    try:
        lines = try_open_in_another_process(state_path)
        assert lines[0] == f"locked {os.getpid()}"
        assert f"locked by pid {os.getpid()}" in lines[1]
        # in this process too: a second writer fails at once
        with pytest.raises(StateLocked) as info:
            StateStore.open(state_path)
        assert info.value.pid == os.getpid()
    finally:
        store.close()
    assert try_open_in_another_process(state_path) == ["opened"]


def test_readonly_and_unlocked_opens_work_while_locked(state_path: Path) -> None:
    with StateStore.open(state_path) as writer:
        writer.put(Record("a", "video", RecordStatus.READY, "/a"))
        with StateStore.open(state_path, readonly=True) as reader:
            assert set(reader.records()) == {"a"}
            writer.put(Record("b", "video", RecordStatus.READY, "/b"))
            assert set(reader.records()) == {"a", "b"}  # sees later commits
            with pytest.raises(StateError, match="read-only"):
                reader.put(Record("c", "video", RecordStatus.READY, "/c"))
            with pytest.raises(StateError, match="read-only"):
                reader.set_meta("k", "v")
        with StateStore.open(state_path, lock=False) as unlocked:
            unlocked.put(Record("c", "video", RecordStatus.READY, "/c"))
        assert set(writer.records()) == {"a", "b", "c"}


def test_readonly_on_a_missing_file_is_an_empty_view_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "state.db"
    with StateStore.open(path, readonly=True) as store:
        assert store.records() == {}
        assert store.get("a") is None
        assert store.cached_hash("/a.mp4", 10, 100) is None
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        with pytest.raises(StateError, match="read-only"):
            store.put(Record("a", "video", RecordStatus.READY, "/a"))
    assert not (tmp_path / "nowhere").exists()


def test_an_empty_file_reads_as_empty_and_a_writer_creates_the_schema(state_path: Path) -> None:
    # what a writer killed between creating the file and committing the schema leaves behind
    state_path.parent.mkdir(mode=0o700)
    state_path.touch(mode=0o600)
    with StateStore.open(state_path, readonly=True) as store:
        assert store.records() == {}
    assert state_path.stat().st_size == 0
    with StateStore.open(state_path) as store:
        store.put(Record("a", "video", RecordStatus.READY, "/a"))
    with StateStore.open(state_path, readonly=True) as store:
        assert set(store.records()) == {"a"}


# -- crashes and full disks ----------------------------------------------------------------------

_CRASH_WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from vodsync.state.store import Record, RecordStatus, StateStore

    BATCH = 40

    def rec(name, gen):
        # every field derives from (name, gen), so a half-written record cannot look whole;
        # the long description spreads a batch over many pages
        h = hashlib.sha256(f"{name}:{gen}".encode()).hexdigest()
        return Record(name, "video", RecordStatus.READY, f"/src/{name}/{gen}", remote_id=f"v-{h[:8]}",
                      content_hash=h, size=gen, mtime_ns=gen * 1000,
                      metadata={"title": f"{name}:{gen}", "tags": (str(gen), h[:4]), "description": h * 30},
                      intent={"op": "update", "gen": gen}, attempts=gen)

    store = StateStore.open(sys.argv[1])
    gen = int(store.get_meta("gen") or 0)
    while True:
        gen += 1
        with store.transaction():
            store.put_many(rec(f"batch{i}", gen) for i in range(BATCH))
            store.set_meta("gen", str(gen))
        print(gen, flush=True)  # printed only after the commit returned
        store.put(rec("solo", gen))
        store.remember_hash("/src/solo", gen, gen, str(gen))
    """
)


def check_crash_record(rec: Record, gen: int) -> None:
    h = hashlib.sha256(f"{rec.name}:{gen}".encode()).hexdigest()
    assert rec.source == f"/src/{rec.name}/{gen}"
    assert rec.remote_id == f"v-{h[:8]}" and rec.content_hash == h
    assert rec.size == gen and rec.mtime_ns == gen * 1000 and rec.attempts == gen
    assert rec.metadata == {"title": f"{rec.name}:{gen}", "tags": (str(gen), h[:4]), "description": h * 30}
    assert rec.intent is not None and rec.intent.to_json() == {"op": "update", "gen": gen}


@pytest.mark.slow
def test_kill_9_never_loses_commits_or_leaves_half_records(state_path: Path) -> None:
    rng = random.Random(20240601)
    best_printed = 0
    for _round in range(10):
        child = subprocess.Popen(
            [sys.executable, "-c", _CRASH_WRITER, str(state_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            for _ in range(rng.randint(1, 25)):  # let it commit a random number of batches
                line = child.stdout.readline()
                assert line, child.stderr.read() if child.stderr else "writer died"
                best_printed = max(best_printed, int(line))
            time.sleep(rng.uniform(0, 0.02))  # then kill it at a random instant
            child.send_signal(signal.SIGKILL)
            rest, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == -signal.SIGKILL, err
        best_printed = max([best_printed, *(int(x) for x in rest.split())])

        # the lock died with the writer; the file opens and holds whole records only
        with StateStore.open(state_path) as store:
            integrity = store._conn.execute("PRAGMA integrity_check").fetchone()[0]  # type: ignore[union-attr]
            assert integrity == "ok"
            gen = int(store.get_meta("gen") or 0)
            assert gen >= best_printed  # nothing committed was lost
            records = store.records()
            batch = {n: r for n, r in records.items() if n.startswith("batch")}
            assert len(batch) == 40
            for rec in batch.values():
                check_crash_record(rec, gen)  # the whole batch is from the same commit
            solo = records.get("solo")
            if solo is not None:
                check_crash_record(solo, solo.size)  # type: ignore[arg-type]
                assert solo.size in (gen - 1, gen)  # written after batch `gen` committed
            for (path, size, mtime), digest in cached_hashes(store.path).items():
                assert path == "/src/solo" and size == mtime == int(digest)
    assert best_printed >= 10


def test_full_disk_raises_state_error_and_keeps_earlier_data(state_path: Path) -> None:
    with StateStore.open(state_path) as store:
        early = [Record(f"e{i}", "video", RecordStatus.READY, f"/e{i}") for i in range(20)]
        store.put_many(early)
        conn = store._conn
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" is now full
        big = [
            Record(f"big{i}", "video", RecordStatus.READY, f"/b{i}", metadata={"description": "x" * 4000})
            for i in range(50)
        ]
        with pytest.raises(StateError, match="disk is full") as info:
            store.put_many(big)
        assert not isinstance(info.value, sqlite3.Error)
        with pytest.raises(StateError, match="disk is full"):
            store.put(big[0])
        with pytest.raises(StateError, match="disk is full"):
            with store.transaction():
                store.put(early[0].replace(source="/changed"))
                store.put_many(big)
        # the connection is still usable for reads, and holds exactly the earlier data
        assert set(store.records()) == {r.name for r in early}
        assert store.get("e0").source == "/e0"  # type: ignore[union-attr]
    with StateStore.open(state_path) as store:
        assert set(store.records()) == {r.name for r in early}
        store.put_many(big)  # and with space again, writes work
        assert len(store.records()) == 70


@pytest.mark.slow
def test_100k_records_read_time(state_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = 100_000
    records = [
        Record(
            f"item-{i:06d}",
            "video",
            RecordStatus.READY,
            f"/media/{i}.mp4",
            remote_id=f"vid-{i}",
            reference_id=f"ref-{i}",
            content_hash=hashlib.sha256(str(i).encode()).hexdigest(),
            size=i,
            mtime_ns=i * 1000,
            metadata={"title": f"Item {i}", "tags": ("a", "b"), "description": "d"},
            options={"template_group_id": "tg-1"},
            remote_status="Normal",
            last_result="created",
        )  # fmt: skip
        for i in range(n)
    ]
    with StateStore.open(state_path) as store:
        started = time.perf_counter()
        store.put_many(records)
        wrote = time.perf_counter() - started
    with StateStore.open(state_path, readonly=True) as store:
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            got = store.records()
            timings.append(time.perf_counter() - started)
    assert len(got) == n
    assert got["item-000042"] == records[42].replace(updated_at=got["item-000042"].updated_at)
    with capsys.disabled():
        print(
            f"\n[state] put_many {n} records: {wrote:.2f} s; "
            f"records() of {n}: best {min(timings):.3f} s, runs {', '.join(f'{t:.3f}' for t in timings)}"
        )


