"""End-to-end: the `vodsync` CLI against the emulator (issue 3, the reconciler's evidence).

Every test drives `vodsync.cli.main` in-process through `clikit.Workspace` (manifests
in tmp_path, URL sources on a loopback server, register objects seeded with the
account key) and checks the outcome in the emulator's own state and call counts,
not only in what the CLI prints. Two tests run the real console script as a
process: the state-file lock and the installed entry point.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import fastcrc
import pytest

pytest.register_assert_rewrite("clikit")
from clikit import ENV, PNG, Workspace, mp4, wait_until  # noqa: E402

from vodsync.state.store import StateStore  # noqa: E402

pytest_plugins = ["clikit"]  # the `ws` fixture

VODSYNC = Path(sys.executable).with_name("vodsync")


def converge(ws: Workspace, media: list[dict], *extra: str) -> dict[str, dict]:
    ws.manifest(media)
    run = ws.apply(*extra)
    assert run.code == 0, run
    return ws.status()


def video(ws: Workspace, video_id: str) -> dict:
    return next(v for v in ws.vod()["videos"] if v["VideoId"] == video_id)


# ------------------------------------------------------------------ converge


def test_all_five_kinds_converge_and_a_second_plan_changes_nothing(ws: Workspace) -> None:
    media = ws.five_kinds()
    ws.manifest(media)

    before = ws.calls()
    first = ws.cli("plan", "--detailed-exitcode")
    assert first.code == 2, first
    assert ws.calls() == before, "plan makes no call at all"

    run = ws.apply()
    assert run.code == 0, run
    assert "Apply complete: 5 item(s) succeeded, 0 failed" in run.out, run

    vod = ws.vod()
    videos = {v["Title"]: v for v in vod["videos"]}
    assert sorted(videos) == ["Archive", "Intro", "Trailer"]
    assert sorted(videos["Intro"]["Tags"].split(",")) == ["demo", "intro"]
    assert videos["Trailer"]["Tags"] == "promo"
    assert [(i["Title"], i["Tags"]) for i in vod["images"]] == [("Logo", "brand")]
    assert [a["Title"] for a in vod["attached"]] == ["Intro subtitles"]
    assert len(vod["url_jobs"]) == 1

    status = ws.status()
    assert set(status) == {"intro", "logo", "intro-subs", "trailer", "archive"}
    ids = {
        "intro": videos["Intro"]["VideoId"], "trailer": videos["Trailer"]["VideoId"],
        "archive": videos["Archive"]["VideoId"], "logo": vod["images"][0]["ImageId"],
        "intro-subs": vod["attached"][0]["MediaId"],
    }
    for name, row in status.items():
        assert row["remote_id"] == ids[name], row
        assert row["status"] in ("ready", "processing"), row
        assert row["kind"] == {"intro": "video", "logo": "image", "intro-subs": "attached",
                               "trailer": "url", "archive": "register"}[name]

    # The state file is private and holds no secret.
    assert stat.S_IMODE(os.stat(ws.state).st_mode) == 0o600
    for path in ws.root.glob("state.db*"):
        assert b"emulator-secret" not in path.read_bytes()

    before = ws.calls()
    again = ws.cli("plan", "--detailed-exitcode")
    assert again.code == 0, again
    assert "No changes" in again.out
    assert ws.calls() == before, "a plan without --refresh makes no call at all"

    second = ws.apply()
    assert second.code == 0, second
    assert ws.writes(since=before) == {}, "a converged apply writes nothing"


def test_plan_json_shape(ws: Workspace) -> None:
    ws.file("media/a.mp4", mp4(1000))
    ws.manifest([{"name": "a", "type": "video", "file": "media/a.mp4", "title": "A"}])
    plan = ws.cli("plan", "--json", "--detailed-exitcode")
    assert plan.code == 2, plan
    doc = plan.json()
    assert set(doc) >= {"format_version", "changes", "kept", "summary", "refusal"}
    assert doc["changes"] == [
        {"action": "create", "name": "a", "kind": "video", "reason": "new item", "upload_bytes": 1000,
         "before": None, "after": {"file": "manifests/media/a.mp4", "title": "A"}}
    ]
    assert doc["summary"]["create"] == 1 and doc["summary"]["has_changes"] is True
    assert doc["summary"]["upload_bytes"] == 1000 and doc["refusal"] is None

    assert ws.apply().code == 0
    doc = ws.cli("plan", "--json").json()
    assert doc["changes"] == [] and doc["summary"]["has_changes"] is False and doc["summary"]["in_sync"] == 1


def test_concurrency_one_converges(ws: Workspace) -> None:
    media = ws.five_kinds()
    status = converge(ws, media, "--concurrency", "1")
    assert all(r["remote_id"] for r in status.values()), status
    assert ws.cli("plan", "--detailed-exitcode").code == 0


# ------------------------------------------------------------------ changes


def test_a_title_change_is_exactly_one_update(ws: Workspace) -> None:
    media = ws.five_kinds()
    status = converge(ws, media)
    media[0]["title"] = "Intro (new cut)"
    ws.manifest(media)

    plan = ws.cli("plan", "--json", "--detailed-exitcode")
    assert plan.code == 2, plan
    assert [(c["action"], c["name"], c["fields"]) for c in plan.json()["changes"]] == [("update", "intro", ["title"])]
    text = ws.cli("plan")
    assert "update" in text.out and "intro" in text.out and "title changed" in text.out, text

    before = ws.calls()
    run = ws.apply()
    assert run.code == 0, run
    assert ws.writes(since=before) == {"UpdateVideoInfo": 1}
    assert video(ws, status["intro"]["remote_id"])["Title"] == "Intro (new cut)"
    assert ws.cli("plan", "--detailed-exitcode").code == 0


def test_metadata_changes_on_every_kind_are_batched_updates(ws: Workspace) -> None:
    media = ws.five_kinds()
    converge(ws, media)
    for m in media:
        m.update(title=m["title"] + " v2", tags=["x", "y"], description="d2", cate_id=7)
    ws.manifest(media)
    before = ws.calls()
    run = ws.apply()
    assert run.code == 0, run
    assert ws.writes(since=before) == {"UpdateVideoInfo": 3, "UpdateImageInfos": 1, "UpdateAttachedMediaInfos": 1}
    vod = ws.vod()
    for kind in ("videos", "images", "attached"):
        for media_item in vod[kind]:
            got = (media_item["Title"][-3:], media_item["Tags"], media_item["Description"], media_item["CateId"])
            assert got == (" v2", "x,y", "d2", 7), (kind, media_item)
    assert ws.cli("plan", "--refresh", "--detailed-exitcode").code == 0

    for m in media:  # an empty list cannot clear the tags (the API has no way); a field left out is not managed
        m["tags"] = []
        del m["description"]
    ws.manifest(media)
    assert ws.apply().code == 0
    vod = ws.vod()
    assert all(x["Tags"] == "x,y" and x["Description"] == "d2" for k in ("videos", "images", "attached")
               for x in vod[k])
    assert ws.cli("plan", "--refresh", "--detailed-exitcode").code == 0

    table = ws.cli("status")
    assert table.code == 0 and table.out.startswith("NAME") and "intro-subs" in table.out, table


def test_new_bytes_replace_the_video_and_keep_its_id(ws: Workspace) -> None:
    media = ws.five_kinds()
    status = converge(ws, media)
    vid = status["intro"]["remote_id"]
    old = video(ws, vid)
    # Same size, other bytes: only the content hash can tell.
    new_bytes = mp4(4000, b"w")
    path = ws.file("media/intro.mp4", new_bytes)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))

    plan = ws.cli("plan", "--json", "--detailed-exitcode")
    assert plan.code == 2, plan
    assert [(c["action"], c["name"]) for c in plan.json()["changes"]] == [("replace", "intro")]

    before = ws.calls()
    run = ws.apply()
    assert run.code == 0, run
    writes = ws.writes(since=before)
    assert writes["RefreshUploadVideo"] >= 1 and "CreateUploadVideo" not in writes, writes
    videos = ws.vod()["videos"]
    assert sum(1 for v in videos if v["Title"] == "Intro") == 1
    assert ws.status()["intro"]["remote_id"] == vid
    obj = next(o for o in ws.vod()["objects"] if o["bucket"] == old["Bucket"] and o["key"] == old["FileName"])
    assert obj["size"] == len(new_bytes)
    assert obj["etag"].strip('"').lower() == hashlib.md5(new_bytes).hexdigest()
    # The content identity the state records is the CRC-64 OSS keeps for the object.
    assert ws.records()["intro"]["content_hash"] == f"{obj['crc64']:016x}" == f"{fastcrc.crc64.xz(new_bytes):016x}"
    assert ws.cli("plan", "--detailed-exitcode").code == 0


def test_touched_but_unchanged_file_is_bookkeeping_only(ws: Workspace) -> None:
    media = ws.five_kinds()
    converge(ws, media)
    path = ws.manifests / "media/intro.mp4"
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 7_000_000_000))
    before = ws.calls()
    assert ws.cli("plan", "--detailed-exitcode").code == 0
    run = ws.apply()
    assert run.code == 0, run
    assert ws.writes(since=before) == {}


def test_new_image_bytes_make_a_new_image_and_delete_the_old(ws: Workspace) -> None:
    media = ws.five_kinds()
    status = converge(ws, media)
    old_id = status["logo"]["remote_id"]
    ws.file("media/logo.png", PNG + b"\x01" * 64)

    plan = ws.cli("plan", "--json")
    assert [(c["action"], c["name"]) for c in plan.json()["changes"]] == [("replace", "logo")], plan
    run = ws.apply()
    assert run.code == 0, run
    new_id = ws.status()["logo"]["remote_id"]
    images = ws.vod()["images"]
    assert new_id and new_id != old_id
    assert [i["ImageId"] for i in images] == [new_id], "the superseded image is deleted"
    assert images[0]["Size"] == len(PNG) + 64 and images[0]["Title"] == "Logo"


def test_changed_sources_replace_url_and_register_media(ws: Workspace) -> None:
    media = [
        {"name": "r", "type": "register", "file_url": ws.seed_object("x/1.mp4", mp4(800)), "title": "R",
         "on_delete": "delete-source"},  # the replaced registration is deleted, its object with it
        {"name": "u", "type": "url", "url": ws.url("/src/1.mp4", mp4(800)), "title": "U"},
    ]
    old = converge(ws, media)
    media[0].update(file_url=ws.seed_object("x/2.mp4", mp4(900)), title="R2")
    media[1].update(url=ws.url("/src/2.mp4", mp4(900)), title="U2")
    ws.manifest(media)
    plan = ws.cli("plan", "--json").json()
    assert sorted((c["action"], c["name"]) for c in plan["changes"]) == [("replace", "r"), ("replace", "u")]
    run = ws.apply()
    assert run.code == 0, run
    new = ws.status()
    titles = {v["VideoId"]: v["Title"] for v in ws.vod()["videos"]}
    assert titles == {new["r"]["remote_id"]: "R2", new["u"]["remote_id"]: "U2"}, "old media deleted"
    assert {new["r"]["remote_id"], new["u"]["remote_id"]}.isdisjoint({old["r"]["remote_id"], old["u"]["remote_id"]})
    assert ws.cli("plan", "--detailed-exitcode").code == 0


def test_a_failed_url_replace_keeps_the_old_media_and_is_retried(ws: Workspace) -> None:
    status = converge(ws, [{"name": "u", "type": "url", "url": ws.url("/src/1.mp4", mp4(800)), "title": "U"}])
    old = status["u"]["remote_id"]
    new_url = ws.sources.base + "/src/2.mp4"  # not served yet: the ingest fails
    ws.manifest([{"name": "u", "type": "url", "url": new_url, "title": "U"}])
    run = ws.apply()
    assert run.code == 1 and "DOWNLOAD_FAIL" in run.out + run.err, run
    assert [v["VideoId"] for v in ws.vod()["videos"]] == [old], "the old media still serves"

    plan = ws.cli("plan", "--json", "--detailed-exitcode")
    assert plan.code == 2, plan
    assert [(c["action"], c["name"]) for c in plan.json()["changes"]] == [("replace", "u")]
    ws.sources.add("/src/2.mp4", mp4(900))
    run = ws.apply()
    assert run.code == 0, run
    new = ws.status()["u"]["remote_id"]
    assert [v["VideoId"] for v in ws.vod()["videos"]] == [new] and new != old
    assert ws.cli("plan", "--detailed-exitcode").code == 0


@pytest.mark.parametrize("after", ["url", "image"])
def test_a_type_change_replaces_the_media(ws: Workspace, after: str) -> None:
    ws.file("media/a.mp4", mp4(1000))
    ws.file("media/a.png", PNG)
    old = converge(ws, [{"name": "a", "type": "video", "file": "media/a.mp4", "title": "A"}])["a"]["remote_id"]
    item = {"url": {"type": "url", "url": ws.url("/src/a.mp4", mp4(900))},
            "image": {"type": "image", "file": "media/a.png"}}[after]
    ws.manifest([{"name": "a", "title": "A", **item}])
    plan = ws.cli("plan", "--json").json()
    assert [(c["action"], c["name"], c["kind"]) for c in plan["changes"]] == [("replace", "a", after)]
    run = ws.apply()
    assert run.code == 0, run
    rec = ws.status()["a"]
    vod = ws.vod()
    remote = [v["VideoId"] for v in vod["videos"]] + [i["ImageId"] for i in vod["images"]]
    assert remote == [rec["remote_id"]] and rec["remote_id"] != old and rec["kind"] == after
    assert ws.cli("plan", "--detailed-exitcode").code == 0


# ------------------------------------------------------------------ removal and prune


def test_a_removed_item_is_kept_without_prune_and_deleted_with_it(ws: Workspace) -> None:
    media = ws.five_kinds()
    status = converge(ws, media)
    gone = status["trailer"]["remote_id"]
    ws.manifest([m for m in media if m["name"] != "trailer"])

    plan = ws.cli("plan", "--json", "--detailed-exitcode")
    assert plan.code == 0, plan  # keeping is not a change
    assert plan.json()["changes"] == []
    assert [k["name"] for k in plan.json()["kept"]] == ["trailer"]
    assert "--prune" in ws.cli("plan").out

    before = ws.calls()
    assert ws.apply().code == 0
    assert ws.writes(since=before) == {}
    assert any(v["VideoId"] == gone for v in ws.vod()["videos"])

    pruned = ws.cli("plan", "--prune", "--json", "--detailed-exitcode")
    assert pruned.code == 2
    assert [(c["action"], c["name"]) for c in pruned.json()["changes"]] == [("delete", "trailer")]
    run = ws.apply("--prune")
    assert run.code == 0, run
    assert ws.writes(since=before) == {"DeleteVideo": 1}
    videos = {v["VideoId"] for v in ws.vod()["videos"]}
    assert gone not in videos and len(videos) == 2
    assert "trailer" not in ws.status()
    assert ws.cli("plan", "--prune", "--detailed-exitcode").code == 0


def test_max_delete_refuses_and_deletes_nothing(ws: Workspace) -> None:
    media = ws.five_kinds()
    media[4]["on_delete"] = "delete-source"  # archive: its prune deletes the registered object
    converge(ws, media)
    ws.manifest(media[:2])
    before_state = ws.vod()
    before = ws.calls()

    plan = ws.cli("plan", "--prune", "--max-delete", "2", "--detailed-exitcode")
    assert plan.code == 1 and "refus" in plan.out.lower(), plan
    run = ws.apply("--prune", "--max-delete", "2")
    assert run.code == 1, run
    assert "--max-delete" in run.out + run.err
    assert ws.writes(since=before) == {}
    after = ws.vod()
    for kind in ("videos", "images", "attached"):
        assert len(after[kind]) == len(before_state[kind])
    assert set(ws.status()) == {m["name"] for m in media}

    assert ws.apply("--prune", "--max-delete", "3").code == 0
    assert set(ws.status()) == {"intro", "logo"}


def test_a_protected_item_survives_prune(ws: Workspace) -> None:
    media = ws.five_kinds()
    media[3]["protect"] = True  # trailer
    media[4]["on_delete"] = "delete-source"  # archive: its prune deletes the registered object
    status = converge(ws, media)
    ws.manifest([m for m in media if m["name"] not in ("trailer", "archive")])
    run = ws.apply("--prune")
    assert run.code == 0, run
    videos = {v["VideoId"] for v in ws.vod()["videos"]}
    assert status["trailer"]["remote_id"] in videos
    assert status["archive"]["remote_id"] not in videos
    assert "trailer" in ws.status() and "archive" not in ws.status()
    plan = ws.cli("plan", "--prune", "--json").json()
    assert plan["changes"] == [] and [k["name"] for k in plan["kept"]] == ["trailer"]


def test_prune_with_empty_manifests_is_refused(ws: Workspace) -> None:
    converge(ws, ws.five_kinds()[:1])
    (ws.manifests / "library.yaml").write_text("media: []\n")
    before = ws.calls()
    run = ws.apply("--prune")
    assert run.code == 1, run
    assert "describe no media" in run.out
    assert "over the limit" not in run.out
    assert ws.writes(since=before) == {} and len(ws.vod()["videos"]) == 1


# ------------------------------------------------------------------ broken manifests

GOOD = """\
media:
  - name: a
    type: video
    file: media/a.mp4
    title: A
"""

BROKEN = {
    # name: (manifest text, line the message must name, words it must contain)
    "yaml-syntax": (GOOD + "  - name: b\n    title: a: b\n", 7, "invalid YAML"),
    "unknown-field": (GOOD + "    tittle: typo\n", 6, "tittle"),
    "bad-tag": (GOOD + "    tags: [ok, 'a,b']\n", 6, "comma"),
    "missing-file": (GOOD.replace("media/a.mp4", "media/nope.mp4"), 4, "nope.mp4"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_changes_nothing_and_names_file_and_line(ws: Workspace, case: str) -> None:
    text, line, words = BROKEN[case]
    ws.file("media/a.mp4", mp4(500))
    (ws.manifests / "good.yaml").write_text(
        "media:\n  - name: other\n    type: video\n    file: media/a.mp4\n"
    )
    (ws.manifests / "broken.yaml").write_text(text)
    before = ws.calls()
    for command in (("validate",), ("plan",), ("plan", "--detailed-exitcode"), ("apply",)):
        run = ws.cli(*command)
        assert run.code == 1, (command, run)
        assert f"broken.yaml:{line}" in run.err, run
        assert words in run.err, run
        assert "good.yaml" not in run.err
    assert ws.calls() == before, "a broken manifest makes no call at all"
    assert not ws.vod()["videos"]
    assert not ws.state.exists() or ws.status() == {}


def test_duplicate_names_name_both_places(ws: Workspace) -> None:
    ws.file("media/a.mp4", mp4(100))
    ws.manifest([{"name": "a", "type": "video", "file": "media/a.mp4"}], name="one.yaml")
    ws.manifest([{"name": "a", "type": "video", "file": "media/a.mp4"}], name="two.yaml")
    run = ws.cli("plan")
    assert run.code == 1
    assert "one.yaml:2" in run.err and "two.yaml:2" in run.err and "duplicate" in run.err


def test_credentials_missing_or_wrong(ws: Workspace) -> None:
    ws.file("media/a.mp4", mp4(100))
    ws.manifest([{"name": "a", "type": "video", "file": "media/a.mp4"}])
    run = ws.cli("apply", env={k: "" for k in ENV})
    assert run.code == 1 and "ALIBABA_CLOUD_ACCESS_KEY_ID" in run.err and "Traceback" not in run.err, run
    run = ws.cli("apply", env={"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "not-the-secret"})
    assert run.code == 1, run
    assert "InvalidAccessKeySecret" in run.err and "not-the-secret" not in run.out + run.err
    assert not ws.vod()["videos"]


def test_validate_and_schema(ws: Workspace) -> None:
    ws.manifest(ws.five_kinds())
    before = ws.calls()
    run = ws.cli("validate")
    assert run.code == 0, run
    assert "5 item(s) in 1 manifest file(s)" in run.out
    assert ws.calls() == before

    schema = ws.cli("schema")
    assert schema.code == 0
    doc = json.loads(schema.out)
    assert "media" in doc["properties"]
    assert json.dumps(doc)  # serialisable, and a real JSON Schema shape
    assert doc.get("type") == "object" or "$defs" in doc


# ------------------------------------------------------------------ faults


def test_throttled_creates_still_converge(ws: Workspace) -> None:
    media = ws.five_kinds()
    ws.emulator.set_faults([{"match": "CreateUploadVideo", "error": "Throttling.User", "count": 2}])
    status = converge(ws, media)
    assert ws.calls()["CreateUploadVideo"] == 3
    assert sum(1 for v in ws.vod()["videos"] if v["Title"] == "Intro") == 1
    assert status["intro"]["remote_id"]
    assert ws.cli("plan", "--detailed-exitcode").code == 0


@pytest.mark.parametrize("call", ["UploadMediaByURL", "RegisterMedia", "GetURLUploadInfos", "CreateUploadImage",
                                  "oss:PUT"])
def test_throttling_anywhere_still_converges_in_one_run(ws: Workspace, call: str) -> None:
    media = ws.five_kinds()
    ws.manifest(media)
    ws.emulator.set_faults([{"match": call, "error": "Throttling.User", "count": 2}])
    run = ws.apply()
    assert run.code == 0, run
    vod = ws.vod()
    assert (len(vod["videos"]), len(vod["images"]), len(vod["attached"]), len(vod["url_jobs"])) == (3, 1, 1, 1)
    assert ws.cli("plan", "--detailed-exitcode").code == 0


def test_an_sts_token_expiring_mid_upload_still_converges(ws: Workspace) -> None:
    """A multipart upload whose first part is held until the upload token has expired."""
    big = 17 * 1024 * 1024  # over the 16 MiB multipart threshold: three parts
    path = ws.file("media/big.mp4", b"")
    with open(path, "wb") as f:
        f.write(mp4(1024))
        f.truncate(big)
    ws.manifest([{"name": "big", "type": "video", "file": "media/big.mp4", "title": "Big"}])
    ws.emulator.set_faults([{"match": "oss:PUT", "error": "slow", "delay_ms": 600, "count": 1}])

    def expire_when_the_first_part_arrives() -> None:
        wait_until(lambda: ws.emulator.calls().get("oss:PUT", 0) >= 1, what="the first part")
        ws.emulator.advance(4000)  # past the 3000 s STS lifetime while the part is in flight

    expirer = threading.Thread(target=expire_when_the_first_part_arrives, daemon=True)
    expirer.start()
    run = ws.apply()
    expirer.join(5)
    assert run.code == 0, run
    calls = ws.calls()
    assert calls["RefreshUploadVideo"] >= 1, calls
    assert calls["CreateUploadVideo"] == 1
    videos = ws.vod()["videos"]
    assert len(videos) == 1 and videos[0]["Title"] == "Big"
    obj = next(o for o in ws.vod()["objects"] if o["key"] == videos[0]["FileName"])
    assert obj["size"] == big
    assert ws.status()["big"]["remote_id"] == videos[0]["VideoId"]


def test_a_failing_item_does_not_stop_the_others(ws: Workspace) -> None:
    media = ws.five_kinds()
    media += [
        {"name": "ghost", "type": "register", "file_url": f"{ws.emulator.url}/customer-media/nope/missing.mp4",
         "title": "Ghost"},
        {"name": "dead-link", "type": "url", "url": ws.sources.base + "/src/404.mp4", "title": "Dead link"},
    ]
    ws.manifest(media)
    run = ws.apply()
    assert run.code == 1, run
    assert "ghost" in run.out + run.err and "does not exist" in run.out + run.err
    assert "dead-link" in run.out + run.err and "DOWNLOAD_FAIL" in run.out + run.err
    status = ws.status()
    assert status["ghost"]["status"] == "failed" and status["dead-link"]["status"] == "failed"
    for name in ("intro", "logo", "intro-subs", "trailer", "archive"):
        assert status[name]["status"] in ("ready", "processing") and status[name]["remote_id"], status[name]
    assert len(ws.vod()["videos"]) == 3

    # The failures are retried on the next run; once their sources exist, everything converges.
    ws.seed_object("nope/missing.mp4", mp4(800))
    ws.sources.add("/src/404.mp4", mp4(900))
    plan = ws.cli("plan", "--json").json()
    assert sorted(c["name"] for c in plan["changes"]) == ["dead-link", "ghost"]
    run = ws.apply()
    assert run.code == 0, run
    assert len(ws.vod()["videos"]) == 5
    assert ws.cli("plan", "--detailed-exitcode").code == 0


def test_a_pending_url_ingest_is_continued_not_resubmitted(ws: Workspace) -> None:
    gate = ws.sources.gates["/src/slow.mp4"] = threading.Event()
    url = ws.url("/src/slow.mp4", mp4(2000, b"s"))
    ws.manifest([{"name": "slow", "type": "url", "url": url, "title": "Slow"}])

    first = ws.cli("apply", "--wait", "0")
    assert first.code == 0, first
    rec = ws.status()["slow"]
    assert rec["status"] == "ingesting" and rec["job_id"], rec
    assert ws.calls()["UploadMediaByURL"] == 1
    plan = ws.cli("plan", "--json", "--detailed-exitcode")
    assert [(c["action"], c["name"]) for c in plan.json()["changes"]] == [("follow", "slow")], plan

    gate.set()
    second = ws.apply()
    assert second.code == 0, second
    assert ws.calls()["UploadMediaByURL"] == 1, "the job was followed, not submitted again"
    jobs = ws.vod()["url_jobs"]
    assert len(jobs) == 1 and jobs[0]["Status"] == "SUCCESS" and jobs[0]["JobId"] == rec["job_id"]
    rec = ws.status()["slow"]
    assert rec["status"] in ("ready", "processing") and rec["remote_id"] == jobs[0]["MediaId"]
    assert [v["Title"] for v in ws.vod()["videos"]] == ["Slow"]
    assert ws.cli("plan", "--detailed-exitcode").code == 0


@pytest.mark.parametrize("edit", ["title", "url"])
def test_an_edit_made_while_the_ingest_runs_is_applied_when_it_delivers(ws: Workspace, edit: str) -> None:
    """The job delivers what was submitted; the edit made since is carried out in the same
    apply, once the media exists: one run converges."""
    gate = ws.sources.gates["/src/slow.mp4"] = threading.Event()
    item = {"name": "slow", "type": "url", "url": ws.url("/src/slow.mp4", mp4(2000, b"s")), "title": "Slow"}
    ws.manifest([item])
    assert ws.cli("apply", "--wait", "0").code == 0
    assert ws.status()["slow"]["status"] == "ingesting"

    if edit == "title":
        item["title"] = "Slow, renamed"
    else:
        item["url"] = ws.url("/src/new.mp4", mp4(2100, b"n"))
    ws.manifest([item])
    plan = ws.cli("plan", "--json")
    (change,) = plan.json()["changes"]
    then = "title changed" if edit == "title" else "url changed"
    assert (change["action"], change["reason"]) == ("follow", f"URL ingest in progress; then {then}"), change

    gate.set()
    run = ws.apply()
    assert run.code == 0, run
    videos = ws.vod()["videos"]
    assert [v["Title"] for v in videos] == [item["title"]], videos
    assert ws.status()["slow"]["remote_id"] == videos[0]["VideoId"]
    if edit == "url":
        assert ws.calls()["UploadMediaByURL"] == 2
        assert ws.vod()["url_jobs"][-1]["UploadURL"] == item["url"]
    assert ws.cli("plan", "--detailed-exitcode").code == 0, "converged in one apply"


def test_pruning_an_item_whose_ingest_is_running_leaves_no_orphan(ws: Workspace) -> None:
    gate = ws.sources.gates["/src/slow.mp4"] = threading.Event()
    ws.file("media/a.mp4", mp4(100))
    keep = {"name": "a", "type": "video", "file": "media/a.mp4", "title": "A"}
    ws.manifest([keep, {"name": "slow", "type": "url", "url": ws.url("/src/slow.mp4", mp4(900)), "title": "Slow"}])
    assert ws.cli("apply", "--wait", "0").code == 0
    wait_until(lambda: ws.sources.hits["/src/slow.mp4"], what="the download to start")

    ws.manifest([keep])
    run = ws.cli("apply", "--prune", "--wait", "0")
    assert run.code == 0, run
    gate.set()
    run = ws.apply()  # follows the job it could not cancel, and deletes what it delivers
    assert run.code == 0, run
    assert [v["Title"] for v in ws.vod()["videos"]] == ["A"]
    assert set(ws.status()) == {"a"}
    assert ws.cli("plan", "--prune", "--detailed-exitcode").code == 0


# ------------------------------------------------------------------ real processes


def test_a_second_process_on_the_same_state_fails_fast(ws: Workspace) -> None:
    ws.file("media/a.mp4", mp4(500))
    ws.manifest([{"name": "a", "type": "video", "file": "media/a.mp4"}])
    env = {**os.environ, **ENV, "VODSYNC_ENDPOINT": ws.emulator.url}
    with StateStore.open(ws.state):
        started = time.monotonic()
        proc = subprocess.run(
            [str(VODSYNC), "apply", "-f", str(ws.manifests), "--state", str(ws.state), "--yes"],
            capture_output=True, text=True, env=env, cwd=ws.root, timeout=60,
        )
        elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc
    assert f"locked by pid {os.getpid()}" in proc.stderr, proc.stderr
    assert elapsed < 20
    assert ws.calls().get("CreateUploadVideo", 0) == 0


def test_the_installed_console_script_converges(ws: Workspace) -> None:
    """`vodsync` as installed, with the endpoint from VODSYNC_ENDPOINT and keys from the environment."""
    media = ws.five_kinds()[:3]
    ws.manifest(media)
    env = {**os.environ, **ENV, "VODSYNC_ENDPOINT": ws.emulator.url}
    common = ["-f", str(ws.manifests), "--state", str(ws.state)]

    def vodsync(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(VODSYNC), *argv], capture_output=True, text=True, env=env, cwd=ws.root,
                              timeout=120, stdin=subprocess.DEVNULL)

    # The process ends with os._exit after flushing: the whole (buffered) output and the code arrive.
    planned = vodsync("plan", *common, "--json", "--detailed-exitcode")
    assert planned.returncode == 2, planned
    assert sorted(c["name"] for c in json.loads(planned.stdout)["changes"]) == ["intro", "intro-subs", "logo"]
    apply = vodsync("apply", *common, "--yes", "--wait", "20", "--log-format", "json")
    assert apply.returncode == 0, apply
    assert "Apply complete" in apply.stdout
    for line in filter(None, apply.stderr.splitlines()):  # asked for: JSON log lines
        json.loads(line)
    assert "emulator-secret" not in apply.stdout + apply.stderr
    plan = vodsync("plan", *common, "--detailed-exitcode")
    assert plan.returncode == 0, plan
    status = vodsync("status", "--state", str(ws.state), "--json")
    assert sorted(r["name"] for r in json.loads(status.stdout)) == ["intro", "intro-subs", "logo"]
    assert ws.calls()["CreateUploadVideo"] == 1
