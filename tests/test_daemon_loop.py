"""The daemon's reconcile loop in-process: a fake clock drives `Daemon.step()`, the emulator plays VOD.

Nothing here sleeps: stability windows, backoff and async polls are crossed by
moving the fake clock, and transcoding by moving the emulator's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vodsync.cloud.settings import CloudSettings
from vodsync.cloud.vod import VodClient
from vodsync.config import DropFolderSettings
from vodsync.daemon.backoff import ItemBackoff
from vodsync.daemon.loop import (
    DROP_MAX_ATTEMPTS,
    PRUNE_SETTLE_SECONDS,
    Daemon,
    LoopSettings,
)
from vodsync.daemon.manifests import ManifestCache, load_lenient
from vodsync.daemon.metrics import Metrics
from vodsync.desired.loader import ManifestReader
from vodsync.emulator import Emulator
from vodsync.engine.execution import ExecOptions
from vodsync.state.store import RecordStatus, StateStore

MiB = 1024 * 1024


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class World:
    """A temp project (manifests/, drop/, media/), a state store and a daemon on a fake clock."""

    def __init__(self, tmp: Path, emulator: Emulator, *, after: str = "move", prune: bool = False,
                 async_poll: float = 10.0) -> None:
        self.tmp, self.emulator = tmp, emulator
        self.manifests, self.drop, self.media = tmp / "manifests", tmp / "drop", tmp / "media"
        for d in (self.manifests, self.drop, self.media):
            d.mkdir()
        self.clock = FakeClock()
        self.store = StateStore.open(tmp / "state" / "state.db")
        self.metrics = Metrics()
        self.client = VodClient(CloudSettings("emulator", "emulator-secret", endpoint=emulator.url),
                                observer=self.metrics.api_call)
        self.settings = LoopSettings(
            manifests=self.manifests, roots=[tmp], interval=600, prune=prune, max_delete=10, concurrency=2,
            drop_settings=(DropFolderSettings(path=self.drop, stable_seconds=5, after=after),),
        )
        self.async_poll = async_poll
        self.daemon = self.new_daemon()

    def new_daemon(self, **kwargs) -> Daemon:
        import random

        return Daemon(self.settings, self.store, self.client, metrics=self.metrics, clock=self.clock,
                      rng=random.Random(7), async_poll=self.async_poll, **kwargs)

    def step(self):  # noqa: ANN201
        """One scheduling decision, then the work it handed to the pool, finished and collected."""
        report = self.daemon.step()
        self.daemon.join()
        return report

    def write(self, rel: str, data: bytes | str) -> Path:
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        return path

    def manifest(self, name: str, *items: tuple[str, str, str]) -> None:
        lines = ["media:"]
        for item, file, title in items:
            lines += [f"  - name: {item}", "    type: video", f"    file: ../media/{file}", f"    title: {title}"]
        self.write(f"manifests/{name}", "\n".join(lines) + "\n")
        self.daemon.on_change([self.manifests / name])

    def videos(self) -> list[dict]:
        return self.emulator.state()["videos"]

    def calls(self, name: str) -> int:
        return self.emulator.calls().get(name, 0)


@pytest.fixture
def world(tmp_path: Path, emulator: Emulator) -> Iterator[World]:
    w = World(tmp_path, emulator)
    yield w
    w.store.close()


# ----------------------------------------------------------------- drop folders


def test_drop_file_is_taken_once_stable_with_its_sidecar_then_moved_to_done(world: World) -> None:
    world.write("drop/clip.yaml", "title: From the sidecar\ntags: [news, daily]\n")
    world.write("drop/clip.mp4", b"v" * 300_000)
    world.write("drop/clip.mp4.part", b"still coming")  # ignored, never uploaded
    t0 = world.clock.t

    report = world.step()
    assert report is not None and report.ingested == [] and world.videos() == []
    assert world.daemon.next_wake() == t0 + 5  # the stability window, not the 10-minute interval

    world.clock.advance(4.9)
    world.daemon.on_change([world.drop / "clip.mp4"])
    assert world.step().ingested == []  # not stable yet

    world.clock.advance(0.1)
    report = world.step()
    assert report.ingested == [str(world.drop / "clip.mp4")]
    [video] = world.videos()
    assert video["Title"] == "From the sidecar" and sorted(video["Tags"].split(",")) == ["daily", "news"]
    assert (world.drop / "done" / "clip.mp4").is_file() and (world.drop / "done" / "clip.yaml").is_file()
    assert (world.drop / "clip.mp4.part").is_file()
    [rec] = world.store.records().values()
    assert rec.name.startswith("drop/drop/") and rec.origin == "drop:drop"


def test_same_bytes_again_or_renamed_or_after_restart_are_not_uploaded_twice(world: World) -> None:
    data = os.urandom(200_000)
    world.write("drop/a.mp4", data)
    world.step()
    world.clock.advance(5)
    world.step()
    assert len(world.videos()) == 1 and world.calls("CreateUploadVideo") == 1

    # The same bytes under another name, seen by a freshly started daemon (nothing in memory).
    world.write("drop/a copy.mp4", data)
    world.daemon = world.new_daemon()
    world.step()
    world.clock.advance(5)
    report = world.step()
    assert report.ingested == [str(world.drop / "a copy.mp4")]
    assert (world.drop / "done" / "a copy.mp4").is_file()
    assert len(world.videos()) == 1 and world.calls("CreateUploadVideo") == 1


def test_removing_a_drop_file_never_deletes_media_even_with_prune(tmp_path: Path, emulator: Emulator) -> None:
    w = World(tmp_path, emulator, after="keep", prune=True)
    w.manifest("m.yaml")  # an empty manifest: the desired set holds only the drop file
    w.write("drop/keep.mp4", b"k" * 1000)
    w.step()
    w.clock.advance(5)
    assert w.step().ingested
    assert (w.drop / "keep.mp4").is_file()  # after: keep
    (w.drop / "keep.mp4").unlink()
    w.daemon.on_change([w.drop / "keep.mp4"])
    w.clock.advance(601)  # a full pass too
    w.step()
    assert len(w.videos()) == 1 and w.calls("DeleteVideo") == 0
    w.store.close()


def test_invalid_sidecar_sends_the_pair_to_failed_with_a_reason(world: World) -> None:
    world.write("drop/bad.mp4", b"x" * 1000)
    world.write("drop/bad.yaml", "title: ok\ncolour: blue\n")
    world.step()
    world.clock.advance(5)
    report = world.step()
    assert report.failed_files == [str(world.drop / "bad.mp4")]
    reason = (world.drop / "failed" / "bad.mp4.reason.txt").read_text()
    assert "bad.yaml:2: colour: unknown field" in reason
    assert (world.drop / "failed" / "bad.yaml").is_file()
    assert world.calls("CreateUploadVideo") == 0


def test_a_drop_file_that_keeps_failing_goes_to_failed_after_its_retries(world: World) -> None:
    world.emulator.set_faults([{"match": "CreateUploadVideo", "error": "Forbidden.Test", "status": 403}])
    world.write("drop/doomed.mp4", b"d" * 1000)
    world.step()
    world.clock.advance(5)
    for attempt in range(1, DROP_MAX_ATTEMPTS + 1):
        report = world.step()
        assert world.calls("CreateUploadVideo") == attempt, "one attempt per backoff period"
        if attempt < DROP_MAX_ATTEMPTS:
            assert report.failed_files == []
            world.daemon.on_change([world.drop / "doomed.mp4"])
            assert world.step().deferred  # an event does not cut the backoff short
            world.clock.t = world.daemon.next_wake()
    assert report.failed_files == [str(world.drop / "doomed.mp4")]
    reason = (world.drop / "failed" / "doomed.mp4.reason.txt").read_text()
    assert f"failed {DROP_MAX_ATTEMPTS} times" in reason and "Forbidden.Test" in reason


# ----------------------------------------------------------------- manifests and backoff


def test_failed_item_backs_off_persistently_and_a_restart_does_not_hammer_it(world: World) -> None:
    world.write("media/a.mp4", b"a" * 1000)
    world.emulator.set_faults([{"match": "CreateUploadVideo", "error": "Forbidden.Test", "status": 403}])
    world.manifest("m.yaml", ("a", "a.mp4", "A"))
    t0 = world.clock.t
    report = world.step()
    assert [o.name for o in report.failed] == ["a"]
    rec = world.store.get("a")
    assert rec.attempts == 1 and t0 + 15 <= rec.next_attempt_at <= t0 + 30  # 30 s with equal jitter
    assert world.daemon.next_wake() == rec.next_attempt_at

    # A restart (new daemon, same state file) honours the persisted backoff.
    world.daemon = world.new_daemon()
    world.clock.advance(1)
    report = world.step()
    assert report.deferred == ["a"] and world.calls("CreateUploadVideo") == 1

    world.emulator.set_faults([])
    world.clock.t = rec.next_attempt_at
    report = world.step()
    assert not report.failed and report.deferred == []
    rec = world.store.get("a")
    assert rec.status in (RecordStatus.PROCESSING, RecordStatus.READY) and rec.attempts == 0
    assert rec.next_attempt_at is None and len(world.videos()) == 1


def test_backoff_grows_and_is_capped() -> None:
    import random

    b = ItemBackoff(base=30, cap=3600)
    rng = random.Random(1)
    lows = [b.delay(n, rng) for n in range(1, 12)]
    assert 15 <= lows[0] <= 30 and 30 <= lows[1] <= 60
    assert all(1800 <= d <= 3600 for d in lows[8:])


def test_manifest_edit_is_applied_on_the_next_step(world: World) -> None:
    world.write("media/a.mp4", b"a" * 1000)
    world.manifest("m.yaml", ("a", "a.mp4", "First"))
    world.step()
    world.manifest("m.yaml", ("a", "a.mp4", "Second"))
    report = world.step()
    assert [str(c) for c in report.outcomes.values()] and world.calls("UpdateVideoInfo") == 1
    assert world.videos()[0]["Title"] == "Second"


def test_broken_manifest_is_reported_and_nothing_of_it_is_deleted(tmp_path: Path, emulator: Emulator) -> None:
    w = World(tmp_path, emulator, prune=True)
    w.write("media/a.mp4", b"a" * 1000)
    w.write("media/b.mp4", b"b" * 1000)
    w.manifest("a.yaml", ("a", "a.mp4", "A"))
    w.manifest("b.yaml", ("b", "b.mp4", "B"))
    w.step()
    assert len(w.videos()) == 2

    w.write("manifests/b.yaml", "media:\n  - name: b\n    type: video\n    file: [unclosed\n")
    w.manifest("a.yaml", ("a", "a.mp4", "A edited"))  # the valid file's edit still goes through
    report = w.step()
    assert report.manifest_error and "b.yaml" in report.manifest_error
    assert w.calls("DeleteVideo") == 0 and set(w.store.records()) == {"a", "b"}
    assert sorted(v["Title"] for v in w.videos()) == ["A edited", "B"]
    healthy, body = w.daemon.health.report()
    assert healthy and "b.yaml" in body["last_error"]  # reported; unhealthy only if it lasts 3 intervals

    w.write("manifests/b.yaml", "media: []\n")  # b removed on purpose, in a valid file: now prune may act
    w.daemon.on_change([w.manifests / "b.yaml"])
    report = w.step()
    assert report.manifest_error is None and w.calls("DeleteVideo") == 0  # once the names read the same again
    assert w.daemon.next_wake() == w.clock.t + PRUNE_SETTLE_SECONDS
    w.clock.advance(PRUNE_SETTLE_SECONDS)
    w.step()
    assert w.calls("DeleteVideo") == 1
    w.store.close()


def test_lenient_loading_keeps_valid_files_and_names_the_broken_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # files are named as a user opens them from the working directory
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "good.yaml").write_text("media:\n  - {name: u, type: url, url: 'https://e.x/a.mp4'}\n")
    (tmp_path / "m" / "bad.yaml").write_text("media:\n  - {name: v, type: nope}\n")
    (tmp_path / "m" / "dup1.yaml").write_text("media:\n  - {name: d, type: url, url: 'https://e.x/b.mp4'}\n")
    (tmp_path / "m" / "dup2.yaml").write_text("media:\n  - {name: d, type: url, url: 'https://e.x/c.mp4'}\n")
    loaded = load_lenient(tmp_path / "m", roots=[tmp_path])
    assert [i.name for i in loaded.items] == ["u"]
    assert loaded.skipped == ("m/bad.yaml", "m/dup1.yaml", "m/dup2.yaml") and not loaded.complete


# ----------------------------------------------------------------- async work, stop, metrics


def test_transcoding_is_followed_by_polls_without_holding_up_new_work(tmp_path: Path) -> None:
    with Emulator(transcode_seconds=60) as emu:
        w = World(tmp_path, emu, async_poll=10)
        w.write("media/a.mp4", b"a" * 1000)
        w.manifest("m.yaml", ("a", "a.mp4", "A"))
        w.step()
        assert w.store.get("a").status is RecordStatus.PROCESSING
        assert w.daemon.next_wake() == w.clock.t + 10  # a poll, not the 10-minute interval

        # New work meanwhile is not blocked by the video still transcoding.
        w.write("media/b.mp4", b"b" * 1000)
        w.manifest("m.yaml", ("a", "a.mp4", "A"), ("b", "b.mp4", "B"))
        w.step()
        assert w.store.get("b").status is RecordStatus.PROCESSING

        w.clock.advance(10)
        w.step()  # a poll: still transcoding
        assert w.store.get("a").status is RecordStatus.PROCESSING
        emu.advance(61)
        w.clock.advance(10)
        w.step()
        assert {r.status for r in w.store.records().values()} == {RecordStatus.READY}
        assert w.daemon.next_wake() == w.daemon._next_full  # nothing left to follow
        w.store.close()


def test_stop_interrupts_an_upload_at_a_part_boundary_and_the_next_start_resumes(world: World) -> None:
    from vodsync.cloud.upload import upload_file

    world.write("media/big.mp4", b"\0" * (20 * MiB))
    seen: list[int] = []

    def stopping_uploader(ticket, path, *, progress, **kwargs):
        def progress_then_stop(done, total):  # SIGTERM arrives once the upload is under way
            progress(done, total)
            if done and not seen:
                seen.append(done)
                world.daemon.request_stop()

        return upload_file(ticket, path, progress=progress_then_stop, **{**kwargs, "threads": 1, "part_size": 8 * MiB})

    world.daemon = world.new_daemon(uploader=stopping_uploader)
    world.manifest("m.yaml", ("big", "big.mp4", "Big"))
    report = world.step()
    assert report.interrupted and len(seen) == 1
    rec = world.store.get("big")
    assert rec.status is RecordStatus.UPLOADING and rec.attempts == 0 and rec.next_attempt_at is None

    world.daemon = world.new_daemon(uploader=upload_file)  # "restart"
    report = world.step()
    assert not report.failed and [o.action for o in report.outcomes.values()] == ["resume"]
    assert len(world.videos()) == 1 and world.calls("CreateUploadVideo") == 1


def test_events_are_sorted_into_manifest_and_drop_changes(world: World) -> None:
    world.step()
    d = world.daemon
    d.on_change([world.tmp / "elsewhere.txt", world.drop / "done" / "x.mp4"])
    assert not d._manifests_dirty and not d._drops_dirty
    d.on_change([world.drop / "new.mp4"])
    assert d._drops_dirty and not d._manifests_dirty
    d.on_change([world.manifests / "sub" / "x.yaml"])
    assert d._manifests_dirty


def test_metrics_and_status_after_a_pass(world: World) -> None:
    world.write("media/a.mp4", b"a" * 1234)
    world.manifest("m.yaml", ("a", "a.mp4", "A"))
    world.step()
    text = world.metrics.exposition().decode()
    assert 'vodsync_items{status="ready"} 1.0' in text or 'vodsync_items{status="processing"} 1.0' in text
    assert "vodsync_uploads_total 1.0" in text and "vodsync_upload_bytes_total 1234.0" in text
    assert 'vodsync_api_calls_total{action="CreateUploadVideo"} 1.0' in text
    assert 'vodsync_reconciles_total{outcome="ok"} 1.0' in text
    assert "vodsync_last_success_timestamp_seconds" in text


def test_reload_adds_a_drop_folder_and_keeps_the_old_ones_memory(world: World) -> None:
    import dataclasses

    first = world.daemon.folders[0]
    other = world.tmp / "other"
    other.mkdir()
    settings = dataclasses.replace(world.settings, interval=60, drop_settings=(
        *world.settings.drop_settings, DropFolderSettings(path=other, stable_seconds=5)))
    world.daemon.reload(settings)
    assert world.daemon.folders[0] is first and world.daemon.folders[1].path == other
    assert world.daemon.health.interval_seconds == 60


def test_reload_refuses_a_new_drop_folder_whose_label_a_kept_one_has(world: World) -> None:
    import dataclasses

    from vodsync.errors import ConfigError

    twin = world.tmp / "elsewhere" / world.drop.name  # same directory name: same default label
    twin.mkdir(parents=True)
    settings = dataclasses.replace(world.settings, drop_settings=(
        *world.settings.drop_settings, DropFolderSettings(path=twin, stable_seconds=5)))
    with pytest.raises(ConfigError, match=f"would both be labelled '{world.daemon.folders[0].label}'"):
        world.daemon.reload(settings)
    relabelled = dataclasses.replace(settings, drop_settings=(
        *world.settings.drop_settings, DropFolderSettings(path=twin, stable_seconds=5, label="twin")))
    world.daemon.reload(relabelled)
    assert [f.label for f in world.daemon.folders] == [world.daemon.folders[0].label, "twin"]


def test_prune_never_acts_on_one_read_of_a_half_rewritten_manifest(tmp_path: Path, emulator: Emulator) -> None:
    w = World(tmp_path, emulator, prune=True)
    w.write("media/a.mp4", b"a" * 1000)
    w.write("media/b.mp4", b"b" * 1000)
    w.manifest("m.yaml", ("a", "a.mp4", "A"), ("b", "b.mp4", "B"))
    w.step()
    w.clock.advance(PRUNE_SETTLE_SECONDS)
    w.step()  # the second read: settled
    assert len(w.videos()) == 2
    whole = (w.manifests / "m.yaml").read_text()
    w.write("manifests/m.yaml", whole[: whole.index("  - name: b")])  # truncated, half written
    w.daemon.on_change([w.manifests / "m.yaml"])
    w.step()
    w.clock.advance(PRUNE_SETTLE_SECONDS - 1)
    w.write("manifests/m.yaml", whole)  # the writer finishes
    w.daemon.on_change([w.manifests / "m.yaml"])
    w.step()
    w.clock.advance(PRUNE_SETTLE_SECONDS)
    w.step()
    assert w.calls("DeleteVideo") == 0 and set(w.store.records()) == {"a", "b"}
    w.store.close()


# ----------------------------------------------------------------- the work pool


def test_a_drop_file_uploads_while_a_long_upload_is_held_in_flight(tmp_path: Path, emulator: Emulator) -> None:
    """Issue 16: with concurrency 2, a drop file that settles during a long upload starts at once
    (the pass that finds it stable hands it to the free worker), edits are planned meanwhile, and the
    item in flight is never planned twice. The emulator holds one part of the big upload until the
    test lets it go: no big file, no sleep."""
    w = World(tmp_path, emulator)
    w.daemon = w.new_daemon(exec_options=ExecOptions(multipart_threshold=MiB, part_size=MiB))
    emulator.set_faults([{"match": "oss:PUT", "error": "hold", "count": 1}])
    w.write("media/big.mp4", os.urandom(3 * MiB))
    w.write("media/small.mp4", b"s" * 1000)
    w.manifest("m.yaml", ("big", "big.mp4", "Big"))
    report = w.daemon.step()  # returns with the upload handed to a worker
    assert report.pending == 1 and report.planned == 1
    assert emulator.faults.wait_holding(1, timeout=30)
    assert w.daemon.pool.in_flight() == {"big"}

    w.write("drop/clip.mp4", b"c" * 200_000)
    w.daemon.on_change([w.drop / "clip.mp4"])
    w.daemon.step()  # the first look of the stability window
    w.clock.advance(5)
    report = w.daemon.step()  # stable: planned and handed to the other worker
    [clip] = report.candidates
    assert w.daemon.pool.wait_for([clip], timeout=30)
    w.daemon.step()  # collects the finished job
    assert report.ingested == [str(w.drop / "clip.mp4")] and (w.drop / "done" / "clip.mp4").is_file()
    assert w.store.get(clip).status in (RecordStatus.PROCESSING, RecordStatus.READY)
    # ... all while the big upload is still held in flight.
    assert emulator.faults.holding == 1 and w.daemon.pool.in_flight() == {"big"}
    assert w.store.get("big").status is RecordStatus.UPLOADING
    assert w.calls("CreateUploadVideo") == 2

    # A manifest edit meanwhile: the new item goes ahead, the one in flight is left to its worker.
    w.manifest("m.yaml", ("big", "big.mp4", "Big, renamed"), ("small", "small.mp4", "Small"))
    report = w.daemon.step()
    assert report.in_flight == ["big"] and report.planned == 1
    assert w.daemon.pool.wait_for(["small"], timeout=30)
    assert w.calls("CreateUploadVideo") == 3  # big, clip, small: big never created a second time

    emulator.set_faults([])  # lets the held part go
    w.daemon.join()
    assert w.store.get("big").status in (RecordStatus.PROCESSING, RecordStatus.READY)
    report = w.step()  # big's title, held back while it was in flight, is planned now
    assert report.scope == 1 and report.planned == 1
    assert sorted(v["Title"] for v in w.videos()) == ["Big, renamed", "Small", "clip"]
    assert w.calls("CreateUploadVideo") == 3 and len(w.videos()) == 3


def test_a_stop_lets_the_upload_in_flight_stop_at_a_part_and_saves_it(tmp_path: Path, emulator: Emulator) -> None:
    w = World(tmp_path, emulator)
    w.daemon = w.new_daemon(exec_options=ExecOptions(multipart_threshold=MiB, part_size=MiB, upload_threads=1))
    # Every part is held: both part threads (concurrency 2) are inside a part when the stop comes,
    # so neither can start the third part before it (holding only the first raced the other thread).
    emulator.set_faults([{"match": "oss:PUT", "error": "hold"}])
    w.write("media/big.mp4", os.urandom(3 * MiB))
    w.manifest("m.yaml", ("big", "big.mp4", "Big"))
    w.daemon.step()
    assert emulator.faults.wait_holding(2, timeout=30)
    w.daemon.request_stop()
    emulator.set_faults([])  # the part in flight finishes; the next one is not started
    w.daemon.run_loop()  # the loop thread's way out: waits for the workers, collects them
    assert not w.daemon.pool.busy
    assert w.store.get("big").status is RecordStatus.UPLOADING  # resumed by the next start
    assert w.daemon.last_report is not None and w.daemon.last_report.interrupted
    assert len(emulator.state()["multipart_uploads"]) == 1 and w.calls("CompleteMultipartUpload") == 0


class CountingReader(ManifestReader):
    """The loader's reader, noting every manifest file it reads."""

    reads: list[str] = []
    walks = 0

    def read(self, path: Path):  # noqa: ANN201
        type(self).reads.append(Path(path).name)
        return super().read(path)

    def files(self, problems):  # noqa: ANN001, ANN201
        type(self).walks += 1
        return super().files(problems)


def _library(w: World, files: int, per_file: int) -> None:
    for f in range(files):
        items = []
        for i in range(per_file):
            name = f"f{f:02d}-i{i}"
            w.write(f"media/{name}.mp4", name.encode() * 10)
            items.append((name, f"{name}.mp4", name.upper()))
        w.manifest(f"m{f:02d}.yaml", *items)


@pytest.fixture
def counted(tmp_path: Path, emulator: Emulator) -> Iterator[World]:
    w = World(tmp_path, emulator, prune=True)
    CountingReader.reads = []
    w.daemon.manifest_cache = ManifestCache(w.manifests, roots=[tmp_path], reader=CountingReader)
    _library(w, 10, 3)
    w.step()
    assert len(CountingReader.reads) == 10 and len(w.videos()) == 30
    CountingReader.reads, CountingReader.walks = [], 0
    yield w
    w.store.close()


def test_an_edit_of_one_manifest_rereads_that_file_and_plans_only_its_items(counted: World) -> None:
    w = counted
    w.clock.advance(1)
    w.manifest("m03.yaml", ("f03-i0", "f03-i0.mp4", "EDITED"), ("f03-i1", "f03-i1.mp4", "F03-I1"),
               ("f03-i2", "f03-i2.mp4", "F03-I2"))
    report = w.step()
    assert CountingReader.reads == ["m03.yaml"] and CountingReader.walks == 0  # the listing is kept
    assert report.scope == 3 and report.planned == 1 and w.calls("UpdateVideoInfo") == 1
    assert "EDITED" in {v["Title"] for v in w.videos()}
    # The periodic pass still reads (and plans) everything.
    w.clock.advance(600)
    report = w.step()
    assert len(CountingReader.reads) == 11 and report.scope is None and CountingReader.walks == 1

    # A new file named by its event is read without a walk; a directory's event walks the root.
    w.write("manifests/media/new.mp4", b"new" * 10)  # ../media/ from manifests/sub/
    w.manifest("sub/m10.yaml", ("new-one", "new.mp4", "New"))
    w.clock.advance(1)
    report = w.step()
    assert CountingReader.reads[-1] == "m10.yaml" and CountingReader.walks == 1 and report.planned == 1
    (w.manifests / "sub").rename(w.manifests / "moved")
    w.daemon.on_change([w.manifests / "sub", w.manifests / "moved"])
    report = w.step()
    assert CountingReader.walks == 2 and CountingReader.reads[-1] == "m10.yaml" and report.planned == 0


def test_an_item_moved_between_files_is_neither_deleted_nor_created_again(counted: World) -> None:
    w = counted
    w.clock.advance(1)
    w.manifest("m01.yaml", ("f01-i0", "f01-i0.mp4", "F01-I0"), ("f01-i1", "f01-i1.mp4", "F01-I1"))
    w.write("manifests/m02.yaml", "media:\n" + "".join(
        f"  - {{name: {n}, type: video, file: ../media/{n}.mp4, title: {n.upper()}}}\n"
        for n in ("f02-i0", "f02-i1", "f02-i2", "f01-i2")))  # no event for this one: its size moved
    report = w.step()
    assert sorted(CountingReader.reads) == ["m01.yaml", "m02.yaml"] and report.manifest_error is None
    assert report.planned == 0
    w.clock.advance(PRUNE_SETTLE_SECONDS)  # prune may act once the names read the same twice
    w.step()
    assert w.calls("DeleteVideo") == 0 and w.calls("CreateUploadVideo") == 30
    assert w.store.get("f01-i2") is not None and len(w.videos()) == 30


def test_a_name_duplicated_by_an_edit_breaks_both_files_and_nothing_is_deleted(counted: World) -> None:
    w = counted
    w.clock.advance(1)
    w.manifest("m05.yaml", ("f05-i0", "f05-i0.mp4", "F05-I0"), ("f01-i1", "f01-i1.mp4", "Twin"))
    report = w.step()
    assert CountingReader.reads == ["m05.yaml"]  # m01 is not read again: its cached names tell
    assert report.manifest_error is not None and report.manifest_error.startswith("2 manifest file(s) skipped")
    assert "m01.yaml" in report.manifest_error and "m05.yaml" in report.manifest_error
    w.clock.advance(PRUNE_SETTLE_SECONDS)
    w.step()
    assert w.calls("DeleteVideo") == 0 and w.calls("UpdateVideoInfo") == 0 and len(w.store.records()) == 30

    # Fixed: both files are valid again; m01 was never read again, yet its items are planned too.
    w.manifest("m05.yaml", ("f05-i0", "f05-i0.mp4", "F05-I0"), ("f05-i1", "f05-i1.mp4", "F05-I1"),
               ("f05-i2", "f05-i2.mp4", "F05-I2"))
    report = w.step()
    assert report.manifest_error is None and "m01.yaml" not in CountingReader.reads
    assert report.scope == 6  # m05's names before and after, and m01's (valid again)
    assert report.planned == 0  # f05-i1 and f05-i2 were kept while the file was broken
    assert w.calls("DeleteVideo") == 0 and w.calls("CreateUploadVideo") == 30


def test_the_pool_runs_only_what_claim_grants_and_never_takes_an_item_twice() -> None:
    import threading

    from vodsync.daemon.workers import Job, JobResult, WorkPool
    from vodsync.desired.items import Kind
    from vodsync.engine.diff import Action, Change

    gate, ran, released = threading.Event(), [], []

    def run(actions):  # noqa: ANN001, ANN202
        gate.wait(10)
        ran.extend(c.name for c in actions)
        return JobResult()

    def change(name: str) -> Change:
        return Change(Action.CREATE, name, Kind.VIDEO, "new item")

    pool = WorkPool(run, 2, stopping=threading.Event(), claim=lambda names: {n for n in names if n != "b"},
                    release=released.extend)
    pool.submit(Job((change("a"), change("b"))))
    assert pool.in_flight() == {"a", "b"}
    with pytest.raises(ValueError, match="already in flight: a"):
        pool.submit(Job((change("a"),)))
    gate.set()
    assert pool.wait(10)
    [done] = pool.finished()
    assert ran == ["a"] and done.claimed == ("a",) and released == ["a"] and pool.in_flight() == frozenset()
    pool.shutdown()


def test_upload_jobs_leave_transcoding_to_the_polls_which_read_it_in_one_batch(tmp_path: Path) -> None:
    """One look per upload job would read every transcoding video once per upload (quadratic in a
    large first pass); the loop's poll reads them all in one batched call instead."""
    with Emulator(transcode_seconds=60) as emu:
        w = World(tmp_path, emu, async_poll=10)
        items = []
        for n in "abcde":
            w.write(f"media/{n}.mp4", n.encode() * 1000)
            items.append((n, f"{n}.mp4", n.upper()))
        w.manifest("m.yaml", *items)
        report = w.step()
        assert report.pending == 0 and len(report.outcomes) == 5 and not report.failed
        assert w.calls("GetVideoInfos") == 0
        w.clock.advance(10)
        w.step()  # the poll
        assert w.calls("GetVideoInfos") == 1
        emu.advance(61)
        w.clock.advance(10)
        w.step()
        assert {r.status for r in w.store.records().values()} == {RecordStatus.READY}
        w.store.close()
