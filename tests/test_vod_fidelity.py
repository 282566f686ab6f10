"""Where the service is stricter than vodsync once assumed (issue 12: 1, 2, 4, 7, 8, 11).

Each test drives the real SDKs against the emulator, which behaves as the service's
reference says (docs/emulator.md names the source of each behaviour), and fails on the
code before the fix.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from aliyunsdkvod.request.v20170321 import (
    GetURLUploadInfosRequest,
    UploadMediaByURLRequest,
)

pytest.register_assert_rewrite("clikit")
from clikit import PNG, Workspace, mp4, wait_until, workspace  # noqa: E402
from test_cloud_vod import make_client  # noqa: E402

from vodsync.cloud.types import UrlUploadEntry  # noqa: E402

if TYPE_CHECKING:
    from emulator_world import World

pytest_plugins = ["clikit", "emulator_world"]  # the ws and world fixtures


# ------------------------------------------------------------ 1. UploadMediaByURL metadata


def test_url_metadata_reaches_the_video_even_for_a_path_with_spaces_and_accents(ws: Workspace) -> None:
    served = ws.url("/src/été trailer.mp4", mp4(3000, b"t"))
    url = served.replace("été trailer", "été%20trailer")  # a manifest URL has no raw spaces
    ws.manifest([{"name": "trailer", "type": "url", "url": url, "title": "Bande-annonce",
                  "tags": ["promo", "été"], "cate_id": 7, "description": "Première"}])
    run = ws.apply()
    assert run.code == 0, run
    (video,) = ws.vod()["videos"]
    assert (video["Title"], video["Tags"], video["CateId"], video["Description"]) == (
        "Bande-annonce", "promo,été", 7, "Première")
    (job,) = ws.vod()["url_jobs"]
    assert job["Status"] == "SUCCESS"
    assert ws.sources.hits["/src/été trailer.mp4"] == 1
    assert ws.cli("plan", "--detailed-exitcode").code == 0


def test_emulator_ignores_metadata_whose_source_url_is_not_an_entry_as_received(world: World, sources) -> None:
    url = sources.add("/media/clip.mp4", mp4(2000))
    result = world.vod(UploadMediaByURLRequest.UploadMediaByURLRequest, UploadURLs=quote(url, safe=""),
                       UploadMetadatas=json.dumps([{"SourceURL": url, "Title": "lost"}]))
    (job,) = result["UploadJobs"]
    media_id = wait_until(lambda: _job(world, job["JobId"]).get("MediaId"), what="the video")
    (video,) = [v for v in world.emulator.state()["videos"] if v["VideoId"] == media_id]
    assert video["Title"] == "clip.mp4"  # the plain SourceURL matched nothing: the metadata was ignored


def _job(world: World, job_id: str) -> dict:
    (info,) = world.vod(GetURLUploadInfosRequest.GetURLUploadInfosRequest, JobIds=job_id)["URLUploadInfoList"]
    return info


def test_a_repeated_session_finds_the_jobs_instead_of_making_new_ones(emulator, sources) -> None:
    client = make_client(emulator)
    entries = [UrlUploadEntry(url=sources.add(f"/s/{i}.mp4", mp4(1000)), title=f"s{i}") for i in range(3)]
    first = client.upload_media_by_url(entries, session_id="vs_batch-1")
    again = client.upload_media_by_url(entries, session_id="vs_batch-1")  # refused as a repeat: looked up
    assert again == first and len(set(first.values())) == 3
    assert len(emulator.state()["url_jobs"]) == 3
    assert client.calls["UploadMediaByURL"] == 2


def test_an_ambiguous_submit_is_repeated_with_its_session(emulator, sources) -> None:
    client = make_client(emulator)
    entries = [UrlUploadEntry(url=sources.add("/s/lost-answer.mp4", mp4(1000)), title="lost answer")]
    emulator.set_faults([{"match": "UploadMediaByURL", "error": "reset", "count": 1}])
    jobs = client.upload_media_by_url(entries, session_id="vs_batch-2")
    assert list(jobs) == [entries[0].url]
    assert [j["JobId"] for j in emulator.state()["url_jobs"]] == list(jobs.values())


# ------------------------------------------------------------ 2. media that is already gone


@pytest.mark.parametrize(
    ("request_name", "params", "code"),
    [
        ("DeleteImage", {"DeleteImageType": "ImageId", "ImageIds": "0" * 32}, "NoSuchResource"),
        ("DeleteVideo", {"VideoIds": "0" * 32}, "InvalidVideo.NotFound"),
        ("GetVideoInfos", {"VideoIds": "0" * 32}, "InvalidVideo.NotFound"),
        ("GetVideoInfos", {"ReferenceIds": "vs_nobody-has-this"}, "InvalidVideo.NotFound"),
    ],
)
def test_emulator_answers_404_when_no_requested_media_exists(world: World, request_name, params, code) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.request import CommonRequest

    request = CommonRequest(product="vod", version="2017-03-21", action_name=request_name)
    for key, value in params.items():
        request.add_query_param(key, value)
    with pytest.raises(ServerException) as caught:
        world.vod_common(request)
    assert (caught.value.get_error_code(), caught.value.get_http_status()) == (code, 404)


def test_the_client_treats_already_gone_as_done(emulator) -> None:
    client = make_client(emulator)
    ghost = "0" * 32
    assert client.delete_images([ghost]) == [ghost]
    assert client.delete_videos([ghost]) == [ghost]
    assert client.get_video_infos([ghost]) == ({}, [ghost])
    assert client.get_videos_by_reference_ids(["vs_gone-ref"]) == ({}, ["vs_gone-ref"])


def test_a_batch_with_one_image_gone_still_deletes_the_others(emulator) -> None:
    client = make_client(emulator)
    ticket = client.create_upload_image(image_type="default", image_ext="png", title="keep-or-not")
    assert client.delete_images([ticket.media_id, "0" * 32]) == ["0" * 32]
    assert emulator.state()["images"] == []


def test_a_superseded_image_already_gone_does_not_wedge_later_applies(ws: Workspace) -> None:
    ws.file("media/logo.png", PNG)
    items = [{"name": "logo", "type": "image", "file": "media/logo.png", "title": "Logo"},
             {"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro"}]
    ws.file("media/intro.mp4", mp4(3000))
    ws.manifest(items)
    assert ws.apply().code == 0
    old = ws.records()["logo"]["remote_id"]
    # New bytes replace the image; deleting the superseded one fails this time, so the record
    # keeps its cleanup intent for the next run...
    ws.file("media/logo.png", PNG + b"new")
    ws.emulator.set_faults([{"match": "DeleteImage", "error": "Forbidden", "status": 403, "count": 1}])
    assert ws.apply().code == 1
    # ...and before that run someone else deletes the old image.
    ws.emulator.model.call("DeleteImage", {"DeleteImageType": "ImageId", "ImageIds": old})
    items[1]["title"] = "Intro, edited"
    ws.manifest(items)
    run = ws.apply()
    assert run.code == 0, run
    assert [v["Title"] for v in ws.vod()["videos"]] == ["Intro, edited"]
    assert [i["ImageId"] for i in ws.vod()["images"]] == [ws.records()["logo"]["remote_id"]]
    assert ws.records()["logo"]["intent"] in (None, "", "null")
    assert ws.apply().code == 0
    assert ws.cli("plan", "--detailed-exitcode").code == 0


# ------------------------------------------------------------ 4. RegisterMedia, one bucket per call


def test_emulator_refuses_a_register_batch_over_two_buckets(world: World) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkvod.request.v20170321 import RegisterMediaRequest

    world.emulator.oss.ensure_bucket("other-media")
    world.put_object(world.bucket(), "a.mp4", b"a" * 10)
    world.put_object("other-media", "b.mp4", b"b" * 10)
    metadatas = [{"FileURL": world.file_url(world.bucket(), "a.mp4")}, {"FileURL": world.file_url("other-media", "b.mp4")}]
    with pytest.raises(ServerException) as caught:
        world.vod(RegisterMediaRequest.RegisterMediaRequest, RegisterMetadatas=json.dumps(metadatas))
    assert (caught.value.get_error_code(), caught.value.get_http_status()) == ("InvalidParameter.RegisterMetadatas", 400)
    assert world.emulator.state()["videos"] == []


def test_register_items_in_two_buckets_converge_and_match_answers_across_schemes(ws: Workspace) -> None:
    items = [{"name": f"reg-{bucket}-{i}", "type": "register", "title": f"{bucket} {i}",
              "file_url": ws.seed_object(f"films/{i}.mp4", mp4(1500), bucket=bucket)}
             for bucket in ("media-one", "media-two") for i in range(3)]
    ws.manifest(items)
    run = ws.apply()
    assert run.code == 0, run
    assert ws.calls()["RegisterMedia"] == 2  # one call per bucket
    assert sorted(v["Title"] for v in ws.vod()["videos"]) == sorted(i["title"] for i in items)
    assert all(r["status"] == "ready" for r in ws.status().values())
    assert ws.cli("plan", "--detailed-exitcode").code == 0


# ------------------------------------------------------------ 7. limits in bytes, no control characters

CJK_129_BYTES = "标" * 43  # 43 characters, 129 bytes in UTF-8


@pytest.mark.parametrize(
    ("field_yaml", "line", "words"),
    [
        (f"    title: {CJK_129_BYTES}\n", 5, "at most 128 bytes"),
        ('    title: "Intro \\u202Eevil"\n', 5, "U+202E"),
        ('    title: "Intro \\e[31m"\n', 5, "U+001B"),
        ('    description: "two\\nlines"\n', 5, "U+000A"),
        (f"    description: {'描' * 342}\n", 5, "at most 1024 bytes"),
        (f"    tags: [ok, {'é' * 17}]\n", 5, "at most 32 bytes"),
        ('    tags: ["a\\u0000b"]\n', 5, "U+0000"),
    ],
)
def test_manifest_limits_are_bytes_and_control_characters_are_refused(ws: Workspace, field_yaml, line, words) -> None:
    ws.file("media/a.mp4", mp4(500))
    text = "media:\n  - name: a\n    type: video\n    file: media/a.mp4\n" + field_yaml
    (ws.manifests / "lib.yaml").write_text(text, encoding="utf-8")
    run = ws.cli("validate")
    assert run.code == 1, run
    assert f"lib.yaml:{line}" in run.err and words in run.err, run
    assert any(f in run.err for f in ("title", "description", "tags")), run


def test_a_drop_folder_sidecar_gets_the_same_byte_limit() -> None:
    from pydantic import ValidationError

    from vodsync.desired.manifest import MediaMetadata

    MediaMetadata.model_validate({"title": "标" * 42})  # 126 bytes
    with pytest.raises(ValidationError, match="128 bytes"):
        MediaMetadata.model_validate({"title": CJK_129_BYTES})


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"Title": CJK_129_BYTES}, "LengthExceededMax"),
        ({"Title": "ok", "Description": "描" * 342}, "LengthExceededMax"),
        ({"Title": "ok", "Tags": "é" * 17}, "TagsExceededMax"),
        ({"Title": "bad\x1b[31m"}, "IllegalCharacters"),
        ({"Title": "ok\u202eevil"}, "IllegalCharacters"),
        ({"Title": "ok", "Description": "a\r\nb"}, "IllegalCharacters"),
        ({"Title": "ok", "Tags": "a\x00b"}, "IllegalCharacters"),
        ({"Title": "ok", "UserData": json.dumps({"Extend": {"k": "é" * 260}}, ensure_ascii=False)},
         "InvalidParameter.UserData"),
    ],
)
def test_emulator_counts_bytes_and_refuses_control_characters(world: World, params, code) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkvod.request.v20170321 import CreateUploadVideoRequest

    request = CreateUploadVideoRequest.CreateUploadVideoRequest()
    request.set_FileName("a.mp4")
    for key, value in params.items():
        request.add_query_param(key, value)
    with pytest.raises(ServerException) as caught:
        world.vod_common(request)
    assert caught.value.get_error_code() == code


def test_emulator_accepts_exactly_the_byte_limits(world: World) -> None:
    from aliyunsdkvod.request.v20170321 import CreateUploadVideoRequest

    created = world.vod(CreateUploadVideoRequest.CreateUploadVideoRequest, FileName="a.mp4", Title="标" * 42 + "ab",
                        Description="描" * 341 + "d", Tags=",".join(["é" * 16] * 16),
                        UserData=json.dumps({"Extend": {"k": "é" * 250}}, ensure_ascii=False))
    assert created["VideoId"]


# ------------------------------------------------------------ 8. statuses that end following


@pytest.fixture(scope="module")
def transcoding_emulator():
    """Videos stay `Transcoding` (10 minutes of emulator time), so a test can put them in review."""
    from vodsync.emulator import Emulator

    with Emulator(transcode_seconds=600, url_job_seconds=0) as emu:
        yield emu


@pytest.fixture
def slow_ws(transcoding_emulator, tmp_path, monkeypatch):
    transcoding_emulator.reset()
    with workspace(transcoding_emulator, tmp_path, monkeypatch) as space:
        yield space


def _set_video_status(emulator, video_id: str, status: str) -> None:
    import urllib.request

    request = urllib.request.Request(f"{emulator.url}/_emulator/video-status", method="POST",
                                     data=json.dumps({"video_id": video_id, "status": status}).encode())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as answer:
        assert json.loads(answer.read()) == {"ok": True}


@pytest.mark.parametrize(
    ("vod_status", "code", "record_status", "words"),
    [
        ("Checking", 0, "ready", "awaits review"),
        ("Blocked", 1, "failed", "review blocked"),
        ("TranscodeFail", 1, "failed", "transcoding failed"),
        ("ProduceFail", 1, "failed", "producing the video failed"),
        ("UploadFail", 1, "failed", "could not take in"),
    ],
)
def test_review_and_failure_statuses_end_following(slow_ws: Workspace, vod_status, code, record_status, words):
    ws = slow_ws
    ws.file("media/intro.mp4", mp4(3000))
    ws.manifest([{"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro"}])
    assert ws.cli("apply", "--wait", "0").code == 0
    assert ws.status()["intro"]["status"] == "processing"
    _set_video_status(ws.emulator, ws.status()["intro"]["remote_id"], vod_status)
    run = ws.cli("apply", "--wait", "5")
    assert run.code == code, run
    status = ws.status()["intro"]
    assert (status["status"], status["remote_status"]) == (record_status, vod_status)
    assert words in status["last_result"] and words in run.out + run.err
    # Nothing is left to follow: the next apply has no work at all.
    before = ws.calls()
    assert ws.cli("apply", "--wait", "5").code == 0
    assert ws.writes(before) == {} and ws.calls()["GetVideoInfos"] == before["GetVideoInfos"]


def test_the_control_plane_refuses_an_unknown_status(transcoding_emulator) -> None:
    import urllib.error

    transcoding_emulator.reset()
    with pytest.raises(urllib.error.HTTPError) as caught:
        _set_video_status(transcoding_emulator, "0" * 32, "Checking")
    assert caught.value.code == 400


# ------------------------------------------------------------ 11. no undocumented clearing; short URLs


def test_emptying_a_field_is_said_in_the_plan_and_never_sent(ws: Workspace) -> None:
    ws.file("media/logo.png", PNG)
    ws.file("media/intro.mp4", mp4(3000))
    items = [{"name": "logo", "type": "image", "file": "media/logo.png", "title": "Logo", "tags": ["brand"],
              "description": "the logo"},
             {"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro", "tags": ["a"],
              "description": "first"}]
    ws.manifest(items)
    assert ws.apply().code == 0
    for item in items:
        item.update(tags=[], description="")
    ws.manifest(items)
    plan = ws.cli("plan", "--detailed-exitcode")
    assert plan.code == 0, plan  # nothing that can be done
    assert plan.out.count("cannot be cleared") == 2 and "description, tags" in plan.out, plan
    notes = ws.cli("plan", "--json").json()["notes"]
    assert sorted((n["name"], tuple(n["fields"])) for n in notes) == [
        ("intro", ("description", "tags")), ("logo", ("description", "tags"))]
    before = ws.calls()
    run = ws.apply()
    assert run.code == 0, run
    assert ws.writes(before) == {}
    assert [(v["Tags"], v["Description"]) for v in ws.vod()["videos"]] == [("a", "first")]
    assert [(i["Tags"], i["Description"]) for i in ws.vod()["images"]] == [("brand", "the logo")]
    # A real change next to an empty field is carried out; the empty one still is not.
    items[1]["title"] = "Intro 2"
    ws.manifest(items)
    assert ws.apply().code == 0
    assert [(v["Title"], v["Tags"]) for v in ws.vod()["videos"]] == [("Intro 2", "a")]


def test_emulator_refuses_an_empty_value_in_an_update(world: World) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkvod.request.v20170321 import CreateUploadVideoRequest, UpdateVideoInfoRequest

    video_id = world.vod(CreateUploadVideoRequest.CreateUploadVideoRequest, FileName="a.mp4", Title="t",
                         CateId=5)["VideoId"]
    request = UpdateVideoInfoRequest.UpdateVideoInfoRequest()
    request.set_VideoId(video_id)
    request.add_query_param("CateId", "")
    with pytest.raises(ServerException) as caught:
        world.vod_common(request)
    assert caught.value.get_error_code() == "InvalidParameter.CateId"


def test_emulator_refuses_an_overlong_url(world: World) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkvod.request.v20170321 import GetVideoInfosRequest

    with pytest.raises(ServerException) as caught:
        world.vod(GetVideoInfosRequest.GetVideoInfosRequest, VideoIds=",".join(["a" * 32] * 1100))
    assert (caught.value.get_error_code(), caught.value.get_http_status()) == ("RequestURITooLong", 414)


LONG = "描" * 340  # 1020 bytes: about 3 KiB once percent-encoded in the query string


def test_batches_of_long_metadata_are_split_to_keep_urls_short(ws: Workspace) -> None:
    images = [{"name": f"img-{i}", "type": "image", "file": f"media/{i}.png", "title": f"图片 {i}",
               "description": LONG} for i in range(20)]
    for i in range(20):
        ws.file(f"media/{i}.png", PNG + bytes([i]))
    urls = [{"name": f"url-{i}", "type": "url", "url": ws.url(f"/src/{i}.mp4", mp4(1000)), "title": f"视频 {i}",
             "description": LONG} for i in range(12)]
    ws.manifest(images + urls)
    run = ws.apply()
    assert run.code == 0, run
    assert ws.calls()["UploadMediaByURL"] > 1
    assert sorted(v["Description"] for v in ws.vod()["videos"]) == [LONG] * 12
    for image in images:
        image["description"] = LONG[:-1] + "改"
    ws.manifest(images + urls)
    before = ws.calls()
    run = ws.apply()
    assert run.code == 0, run
    assert ws.writes(before)["UpdateImageInfos"] > 1
    assert {i["Description"] for i in ws.vod()["images"]} == {LONG[:-1] + "改"}
