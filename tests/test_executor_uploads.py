"""How the executor shares upload streams between files, and what it records of an upload."""

from __future__ import annotations

import os
from pathlib import Path

import fastcrc

from vodsync.cloud.settings import CloudSettings
from vodsync.cloud.upload import upload_file
from vodsync.cloud.vod import VodClient
from vodsync.desired.loader import load_manifests
from vodsync.emulator import Emulator
from vodsync.engine.executor import ExecOptions, Executor
from vodsync.engine.plan import PlanOptions
from vodsync.engine.reconcile import build_plan
from vodsync.state.store import StateStore

MiB = 1024 * 1024


def test_a_large_file_gets_its_share_of_the_streams_and_its_crc_is_recorded(tmp_path: Path, emulator: Emulator):
    sizes = {"big": 6 * MiB, "a": MiB, "b": MiB, "c": MiB, "d": MiB}  # big: 60% of the bytes
    data = {name: os.urandom(size) for name, size in sizes.items()}
    (tmp_path / "media").mkdir()
    for name, blob in data.items():
        (tmp_path / "media" / f"{name}.mp4").write_bytes(blob)
    (tmp_path / "m.yaml").write_text("media:\n" + "".join(
        f"  - {{name: {n}, type: video, file: media/{n}.mp4}}\n" for n in sizes))
    threads: dict[str, int] = {}

    def recording_uploader(ticket, path, **kwargs):
        threads[Path(path).stem] = kwargs["threads"]
        return upload_file(ticket, path, **kwargs)

    client = VodClient(CloudSettings("emulator", "emulator-secret", endpoint=emulator.url))
    with StateStore.open(tmp_path / "state.db") as store:
        plan = build_plan(load_manifests(tmp_path), store, PlanOptions())
        options = ExecOptions(concurrency=2, upload_threads=3, wait=0)  # 6 streams in all
        result = Executor(store, client, checkpoint_dir=tmp_path / "cp", options=options,
                          uploader=recording_uploader).run(plan)
        assert not result.failed
        records = store.records()
    # 6 streams x 60% = 4 (rounded) for the big file; the small ones keep the 3 every file gets.
    assert threads == {"big": 4, "a": 3, "b": 3, "c": 3, "d": 3}
    for name, blob in data.items():
        assert records[name].content_hash == f"{fastcrc.crc64.xz(blob):016x}"
