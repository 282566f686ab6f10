"""Delete safety: vodsync deletes only what the user asked it to delete.

Prune only with `--prune` (or `prune: true`); never when the desired set is
empty or a manifest failed to load; `--max-delete` (default 10) refuses a run
that would delete more, and then nothing at all is applied; `protect: true` is
kept in the state, so removing the item from the manifests cannot delete it;
crash recovery never deletes media it did not create.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from safetykit import Library, SourceServer, mp4, png, writes

from vodsync.emulator import Emulator
from vodsync.engine.executor import Executor, reference_id, user_data
from vodsync.state.store import Record, RecordStatus, StateStore


@pytest.fixture
def lib(tmp_path: Path, emulator: Emulator, sources: SourceServer) -> Library:
    return Library(tmp_path, emulator, sources)


def _media_count(emulator: Emulator) -> int:
    s = emulator.state()
    return len(s["videos"]) + len(s["images"]) + len(s["attached"])


def _converge(lib: Library, items: list[dict]) -> None:
    lib.write(items)
    run = lib.cli("apply", "--wait", "20")
    assert run.code == 0, run


def test_removed_items_are_kept_without_prune(lib: Library, emulator: Emulator) -> None:
    items = lib.mixed(videos=2, images=1, attached=1, urls=1, registers=1)
    _converge(lib, items)
    before = _media_count(emulator)
    lib.write(items[:1])
    plan = lib.cli("plan")
    assert plan.code == 0 and "kept" in plan.out and "--prune" in plan.out, plan
    run = lib.cli("apply")
    assert run.code == 0, run
    assert _media_count(emulator) == before
    assert len(lib.records()) == len(items), "records of kept items stay, so a later --prune can find them"


def test_prune_deletes_exactly_the_removed_items(lib: Library, emulator: Emulator) -> None:
    items = lib.mixed(videos=2, images=1, attached=1, urls=1, registers=1)
    for item in items:
        if item["type"] == "register":  # pruning deletes the registered object too: only when said so
            item["on_delete"] = "delete-source"
    _converge(lib, items)
    keep = [i for i in items if i["name"] in ("video-00", "image-00")]
    lib.write(keep)
    run = lib.cli("apply", "--prune")
    assert run.code == 0, run
    records = lib.records()
    assert set(records) == {"video-00", "image-00"}
    s = emulator.state()
    remaining = {m["VideoId"] for m in s["videos"]} | {m["ImageId"] for m in s["images"]} | {
        m["MediaId"] for m in s["attached"]}
    assert remaining == {r.remote_id for r in records.values()}


def test_prune_from_the_config_file(lib: Library, emulator: Emulator, tmp_path: Path) -> None:
    items = lib.mixed(videos=2, images=0, attached=0, urls=0, registers=0)
    _converge(lib, items)
    config = tmp_path / "vodsync.yaml"
    config.write_text("prune: true\n")
    config.chmod(0o600)
    lib.write(items[:1])
    run = lib.cli("apply", "--config", str(config))
    assert run.code == 0, run
    assert set(lib.records()) == {"video-00"}
    assert len(emulator.state()["videos"]) == 1


def test_empty_desired_set_never_prunes(lib: Library, emulator: Emulator) -> None:
    items = lib.mixed(videos=2, images=1, attached=0, urls=0, registers=0)
    _converge(lib, items)
    before, calls = _media_count(emulator), writes(emulator)
    (lib.manifests / "part0.yaml").write_text("media: []\n")
    run = lib.cli("apply", "--prune", "--max-delete", "100")
    assert run.code == 1, run
    assert "describe no media at all" in run.out + run.err
    assert _media_count(emulator) == before and writes(emulator) == calls
    # An empty manifests directory is the same.
    (lib.manifests / "part0.yaml").unlink()
    run = lib.cli("apply", "--prune", "--max-delete", "100")
    assert run.code == 1, run
    assert _media_count(emulator) == before and writes(emulator) == calls


def test_a_manifest_that_fails_to_load_stops_the_run_before_any_call(lib: Library, emulator: Emulator) -> None:
    items = lib.mixed(videos=3, images=0, attached=0, urls=0, registers=0)
    lib.write(items, per_file=1)  # three files
    assert lib.cli("apply").code == 0
    emulator.calls().clear()
    before = emulator.calls()
    # One file broken, one item removed from another: nothing may be deleted, nothing created.
    (lib.manifests / "part1.yaml").write_text("media:\n  - name: video-01\n    type: video\n    file: [oops\n")
    (lib.manifests / "part2.yaml").write_text("media: []\n")
    (lib.manifests / "part3.yaml").write_text(
        "media:\n  - {name: fresh, type: video, file: media/clip0.mp4}\n")
    run = lib.cli("apply", "--prune")
    assert run.code != 0, run
    assert "part1.yaml" in run.err and "Traceback" not in run.err, run
    assert emulator.calls() == before, "not a single call when a manifest failed to load"
    assert len(emulator.state()["videos"]) == 3


def test_max_delete_refuses_the_whole_run(lib: Library, emulator: Emulator) -> None:
    items = lib.mixed(videos=4, images=0, attached=0, urls=0, registers=0)
    _converge(lib, items)
    calls = writes(emulator)
    # Remove three, add one: the refusal must stop the create too ("nothing was changed").
    lib.write(items[:1] + [{"name": "new", "type": "video", "title": "New",
                            "file": lib.file("media/new.mp4", mp4(3333))}])
    run = lib.cli("apply", "--prune", "--max-delete", "2")
    assert run.code == 1, run
    assert "more than --max-delete 2" in run.out + run.err
    assert writes(emulator) == calls
    assert len(emulator.state()["videos"]) == 4
    # Exactly at the limit: allowed.
    run = lib.cli("apply", "--prune", "--max-delete", "3")
    assert run.code == 0, run
    assert len(emulator.state()["videos"]) == 2


def test_default_max_delete_is_10(lib: Library, emulator: Emulator) -> None:
    items = lib.mixed(videos=12, images=0, attached=0, urls=0, registers=0)
    _converge(lib, items)
    lib.write(items[:1])
    run = lib.cli("apply", "--prune")
    assert run.code == 1 and "more than --max-delete 10" in run.out + run.err, run
    assert len(emulator.state()["videos"]) == 12


def test_protect_is_kept_in_the_state(lib: Library, emulator: Emulator) -> None:
    items = lib.mixed(videos=2, images=1, attached=0, urls=0, registers=0)
    items[0]["protect"] = True
    items[2]["protect"] = True
    _converge(lib, items)
    records = lib.records()
    assert records["video-00"].protect and records["image-00"].protect and not records["video-01"].protect
    lib.write([items[1]])  # the protected items are gone from the manifests altogether
    plan = lib.cli("plan", "--prune", "--json")
    doc = json.loads(plan.out)
    assert {c["name"] for c in doc["kept"]} == {"video-00", "image-00"}
    assert all("protected" in c["reason"] for c in doc["kept"])
    run = lib.cli("apply", "--prune")
    assert run.code == 0, run
    assert len(emulator.state()["videos"]) == 2 and len(emulator.state()["images"]) == 1
    assert lib.records()["video-00"].protect
    # Protection survives the item's absence; an empty-but-loading manifest set still refuses.
    again = lib.cli("plan", "--prune", "--detailed-exitcode")
    assert again.code == 0, again


def test_protect_set_later_is_recorded_without_an_api_call(lib: Library, emulator: Emulator) -> None:
    items = lib.mixed(videos=1, images=0, attached=0, urls=0, registers=0)
    _converge(lib, items)
    calls = writes(emulator)
    items[0]["protect"] = True
    lib.write(items)
    assert lib.cli("apply").code == 0
    assert lib.records()["video-00"].protect
    assert writes(emulator) == calls
    lib.write([])
    (lib.manifests / "other.yaml").write_text(
        "media:\n  - {name: other, type: video, file: media/clip0.mp4, title: Other}\n")
    assert lib.cli("apply", "--prune").code == 0
    assert "video-00" in lib.records()
    assert any(v["Title"] == "Clip 0" for v in emulator.state()["videos"])


# ---------------------------------------------------------------- recovery deletes only its own


def _client(emulator: Emulator):
    from vodsync.cloud.settings import CloudSettings
    from vodsync.cloud.vod import VodClient

    return VodClient(CloudSettings("emulator", "emulator-secret", endpoint=emulator.url))


def test_recovery_deletes_only_its_own_orphans(lib: Library, emulator: Emulator, tmp_path: Path) -> None:
    """An image create interrupted after the intent: recovery looks for orphans by title, and
    VOD's title search is a substring match. Media of other items, and media someone else
    uploaded with a similar (or even the same) title, must survive."""
    client = _client(emulator)
    lib.file("media/logo.png", png(1))
    lib.write([{"name": "logo", "type": "image", "file": "media/logo.png", "title": "Logo"}])

    # What the interrupted run left: an intent, and the image it created before dying.
    store = StateStore.open(lib.state)
    now = time.time()
    store.put(Record(name="logo", kind="image", status=RecordStatus.CREATING, source=str(lib.manifests),
                     intent={"op": "create", "at": now, "title": "Logo"}))
    store.close()
    ours = client.create_upload_image(image_type="default", image_ext="png", title="Logo",
                                      user_data=user_data("logo")).media_id
    # Other people's images, made in the same minutes.
    theirs_similar = client.create_upload_image(image_type="default", image_ext="png",
                                                title="Logo (marketing)").media_id
    theirs_same = client.create_upload_image(image_type="default", image_ext="png", title="Logo",
                                             user_data={"Extend": {"team": "design"}}).media_id
    other_item = client.create_upload_image(image_type="default", image_ext="png", title="Logo v2",
                                            user_data=user_data("logo-v2")).media_id

    run = lib.cli("apply")
    assert run.code == 0, run
    ids = {m["ImageId"] for m in emulator.state()["images"]}
    assert ours not in ids, "our orphan is removed"
    assert {theirs_similar, theirs_same, other_item} <= ids, "nothing else is"
    assert lib.records()["logo"].remote_id in ids


def test_recovery_keeps_an_old_video_of_the_same_reference(lib: Library, emulator: Emulator) -> None:
    """A video recovered by ReferenceId is continued, never deleted or duplicated."""
    client = _client(emulator)
    lib.file("media/clip.mp4", mp4(4000))
    lib.write([{"name": "clip", "type": "video", "file": "media/clip.mp4", "title": "Clip"}])
    store = StateStore.open(lib.state)
    store.put(Record(name="clip", kind="video", status=RecordStatus.CREATING, source="x",
                     intent={"op": "create", "at": time.time(), "title": "Clip"}))
    store.close()
    vid = client.create_upload_video(title="Clip", file_name="clip.mp4", reference_id=reference_id("clip"),
                                     user_data=user_data("clip")).media_id
    run = lib.cli("apply")
    assert run.code == 0, run
    assert [v["VideoId"] for v in emulator.state()["videos"]] == [vid]
    assert lib.records()["clip"].remote_id == vid


# ---------------------------------------------------------------- prune of work in flight


def test_pruning_a_running_url_ingest_leaves_no_video_behind(tmp_path: Path, sources: SourceServer,
                                                             _no_proxies: None) -> None:
    """Delete of an item whose URL job has not finished: the job must be cancelled (or its
    video deleted once it exists), not forgotten, or a video owned by nobody appears later."""
    with Emulator(url_job_seconds=60, transcode_seconds=0) as emu:
        lib = Library(tmp_path, emu, sources)
        items = lib.mixed(videos=1, images=0, attached=0, urls=2, registers=0)
        lib.write(items)
        run = lib.cli("apply", "--wait", "0")
        assert run.code == 0, run
        assert lib.records()["remote-00"].status is RecordStatus.INGESTING
        lib.write([i for i in items if i["name"] != "remote-00"])
        run = lib.cli("apply", "--prune", "--wait", "0")
        assert run.code == 0, run
        assert "remote-00" not in lib.records()
        emu.advance(120)
        run = lib.cli("apply", "--wait", "10")
        assert run.code == 0, run
        titles = sorted(v["Title"] for v in emu.state()["videos"])
        assert titles == ["Clip 0", "Remote 1"], titles


def test_executor_never_deletes_a_protected_record(tmp_path: Path, emulator: Emulator) -> None:
    """Defence in depth below the plan: a DELETE change for a protected record is a no-op."""
    from vodsync.desired.items import Kind
    from vodsync.engine.diff import Action, Change
    from vodsync.engine.plan import Plan

    store = StateStore.open(tmp_path / "s.db")
    vid = _client(emulator).create_upload_video(title="Keep", file_name="k.mp4").media_id
    rec = Record(name="keep", kind="video", status=RecordStatus.READY, source="x", remote_id=vid, protect=True)
    store.put(rec)
    ex = Executor(store, _client(emulator), checkpoint_dir=tmp_path / "cp")
    ex.run(Plan(actions=(Change(Action.DELETE, "keep", Kind.VIDEO, "test", record=rec),)))
    assert [v["VideoId"] for v in emulator.state()["videos"]] == [vid]
    assert store.get("keep") is not None
    store.close()
