"""End-to-end `--refresh`: drift made behind vodsync's back (through the SDK, as the console would) is planned back.

Without `--refresh` a plan reads only the state file, so drift is invisible; with it,
plan reads the remote media (reads only) and apply puts the manifest's values back
or creates media that was deleted remotely.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aliyunsdkvod.request.v20170321.DeleteAttachedMediaRequest import DeleteAttachedMediaRequest
from aliyunsdkvod.request.v20170321.DeleteVideoRequest import DeleteVideoRequest
from aliyunsdkvod.request.v20170321.UpdateImageInfosRequest import UpdateImageInfosRequest
from aliyunsdkvod.request.v20170321.UpdateVideoInfoRequest import UpdateVideoInfoRequest

pytest.register_assert_rewrite("clikit")
from clikit import Workspace  # noqa: E402

pytest_plugins = ["clikit"]  # the `ws` fixture


def sdk(client: Any, request_cls: type, **params: Any) -> dict[str, Any]:
    request = request_cls()
    for name, value in params.items():
        getattr(request, f"set_{name}")(value)
    request.set_protocol_type("http")
    return json.loads(client.do_action_with_exception(request))


def converged(ws: Workspace) -> dict[str, dict]:
    ws.manifest(ws.five_kinds())
    run = ws.apply()
    assert run.code == 0, run
    return ws.status()


def changes(ws: Workspace, *extra: str) -> list[tuple[str, str, str]]:
    run = ws.cli("plan", "--json", *extra)
    assert run.code == 0, run
    return [(c["action"], c["name"], c["reason"]) for c in run.json()["changes"]]


def test_a_title_changed_in_the_console_is_planned_back(ws: Workspace, vod_sdk_client: Any) -> None:
    status = converged(ws)
    vid = status["intro"]["remote_id"]
    sdk(vod_sdk_client, UpdateVideoInfoRequest, VideoId=vid, Title="Renamed in the console")

    assert ws.cli("plan", "--detailed-exitcode").code == 0, "without --refresh the drift is not seen"
    before = ws.calls()
    plan = ws.cli("plan", "--refresh", "--json", "--detailed-exitcode")
    assert plan.code == 2, plan
    assert [(c["action"], c["name"], c.get("fields")) for c in plan.json()["changes"]] == [
        ("update", "intro", ["title"])
    ]
    assert "changed remotely" in plan.json()["changes"][0]["reason"]
    assert ws.writes(since=before) == {}, "plan --refresh only reads"
    assert ws.calls()["GetVideoInfos"] - before["GetVideoInfos"] == 1, "the three videos are read in one batch"

    before = ws.calls()
    run = ws.apply("--refresh")
    assert run.code == 0, run
    assert ws.writes(since=before) == {"UpdateVideoInfo": 1}
    assert next(v for v in ws.vod()["videos"] if v["VideoId"] == vid)["Title"] == "Intro"
    assert ws.cli("plan", "--refresh", "--detailed-exitcode").code == 0


def test_tags_reordered_remotely_are_not_drift(ws: Workspace, vod_sdk_client: Any) -> None:
    status = converged(ws)
    sdk(vod_sdk_client, UpdateVideoInfoRequest, VideoId=status["intro"]["remote_id"], Tags="intro,demo")
    assert ws.cli("plan", "--refresh", "--detailed-exitcode").code == 0


def test_a_video_deleted_remotely_is_created_again(ws: Workspace, vod_sdk_client: Any) -> None:
    status = converged(ws)
    old = status["intro"]["remote_id"]
    sdk(vod_sdk_client, DeleteVideoRequest, VideoIds=old)

    assert changes(ws, "--refresh") == [("create", "intro", "deleted remotely")]
    before = ws.calls()
    run = ws.apply("--refresh")
    assert run.code == 0, run
    writes = ws.writes(since=before)
    assert writes["CreateUploadVideo"] == 1 and writes["oss:PUT"] == 1, writes
    new = ws.status()["intro"]["remote_id"]
    assert new and new != old
    intro = [v for v in ws.vod()["videos"] if v["Title"] == "Intro"]
    assert [v["VideoId"] for v in intro] == [new]
    assert ws.cli("plan", "--refresh", "--detailed-exitcode").code == 0


def test_url_and_register_media_deleted_remotely_come_back(ws: Workspace, vod_sdk_client: Any) -> None:
    """DeleteVideo is physical: a registered video's object goes too, so it can come back only once re-uploaded."""
    status = converged(ws)
    gone = [status["trailer"]["remote_id"], status["archive"]["remote_id"]]
    sdk(vod_sdk_client, DeleteVideoRequest, VideoIds=",".join(gone))

    assert sorted(changes(ws, "--refresh")) == [
        ("create", "archive", "deleted remotely"),
        ("create", "trailer", "deleted remotely"),
    ]
    before = ws.calls()
    run = ws.apply("--refresh")
    assert run.code == 1, run
    assert "archive" in run.err and "does not exist" in run.err, run
    writes = ws.writes(since=before)
    assert writes["UploadMediaByURL"] == 1 and writes["RegisterMedia"] == 1, writes
    after = ws.status()
    assert after["archive"]["status"] == "failed"
    titles = {v["VideoId"]: v["Title"] for v in ws.vod()["videos"]}
    assert titles[after["trailer"]["remote_id"]] == "Trailer"
    assert not set(gone) & set(titles)

    ws.seed_object("archive/old.mp4", b"\x00\x00\x00\x18ftypmp42 again")
    run = ws.apply("--refresh")
    assert run.code == 0, run
    titles = {v["VideoId"]: v["Title"] for v in ws.vod()["videos"]}
    assert titles[ws.status()["archive"]["remote_id"]] == "Archive"
    assert sorted(titles.values()) == ["Archive", "Intro", "Trailer"]
    assert ws.cli("plan", "--refresh", "--detailed-exitcode").code == 0


def test_image_and_attached_drift(ws: Workspace, vod_sdk_client: Any) -> None:
    status = converged(ws)
    content = [{"ImageId": status["logo"]["remote_id"], "Title": "Console logo"}]
    sdk(vod_sdk_client, UpdateImageInfosRequest, UpdateContent=json.dumps(content))
    sdk(vod_sdk_client, DeleteAttachedMediaRequest, MediaIds=status["intro-subs"]["remote_id"])

    assert sorted(changes(ws, "--refresh")) == [
        ("create", "intro-subs", "deleted remotely"),
        ("update", "logo", "title changed (changed remotely)"),
    ]
    run = ws.apply("--refresh")
    assert run.code == 0, run
    vod = ws.vod()
    assert [i["Title"] for i in vod["images"]] == ["Logo"]
    assert [a["Title"] for a in vod["attached"]] == ["Intro subtitles"]
    assert ws.status()["intro-subs"]["remote_id"] == vod["attached"][0]["MediaId"]
    assert ws.cli("plan", "--refresh", "--detailed-exitcode").code == 0
