"""End-to-end batching through the CLI: the API's per-call limits shape how many calls a run makes.

UploadMediaByURL takes at most 20 URLs, RegisterMedia 10 FileURLs, GetURLUploadInfos
10 job IDs and GetVideoInfos 20 IDs; the emulator refuses more, so a run that
converges without errors also proves no call went over its limit.
"""

from __future__ import annotations

import math

import pytest

pytest.register_assert_rewrite("clikit")
from clikit import Workspace, mp4  # noqa: E402

pytest_plugins = ["clikit"]  # the `ws` fixture


def test_25_url_items_are_two_upload_media_by_url_calls(ws: Workspace) -> None:
    media = [
        {"name": f"clip-{i:02d}", "type": "url", "url": ws.url(f"/src/clip-{i:02d}.mp4", mp4(600 + i)),
         "title": f"Clip {i}"}
        for i in range(25)
    ]
    ws.manifest(media)
    run = ws.apply()
    assert run.code == 0, run
    calls = ws.calls()
    assert calls["UploadMediaByURL"] == 2
    assert calls["GetURLUploadInfos"] >= math.ceil(25 / 10)
    videos = ws.vod()["videos"]
    assert sorted(v["Title"] for v in videos) == sorted(m["title"] for m in media)
    assert all(r["remote_id"] for r in ws.status().values())
    assert sum(ws.sources.hits.values()) == 25, "each source downloaded once"

    before = ws.calls()
    refresh = ws.cli("plan", "--refresh", "--detailed-exitcode")
    assert refresh.code == 0, refresh
    assert ws.calls()["GetVideoInfos"] - before["GetVideoInfos"] == 2, "25 videos read 20 at a time"


def test_12_register_items_are_two_register_media_calls(ws: Workspace) -> None:
    media = [
        {"name": f"old-{i:02d}", "type": "register",
         "file_url": ws.seed_object(f"archive/old-{i:02d}.mp4", mp4(700 + i)), "title": f"Old {i}"}
        for i in range(12)
    ]
    ws.manifest(media)
    run = ws.apply()
    assert run.code == 0, run
    assert ws.calls()["RegisterMedia"] == 2
    assert len(ws.vod()["videos"]) == 12
    assert ws.cli("plan", "--detailed-exitcode").code == 0


def test_22_title_changes_on_images_are_two_update_calls(ws: Workspace) -> None:
    from clikit import PNG

    for i in range(22):
        ws.file(f"media/img-{i:02d}.png", PNG + bytes([i]))
    media = [{"name": f"img-{i:02d}", "type": "image", "file": f"media/img-{i:02d}.png", "title": f"Image {i}"}
             for i in range(22)]
    ws.manifest(media)
    assert ws.apply().code == 0
    for m in media:
        m["title"] += " (v2)"
    ws.manifest(media)
    before = ws.calls()
    run = ws.apply()
    assert run.code == 0, run
    assert ws.writes(since=before) == {"UpdateImageInfos": 2}
    assert all(i["Title"].endswith("(v2)") for i in ws.vod()["images"])
