"""URL upload jobs: UploadMediaByURL / GetURLUploadInfos / CancelUrlUploadJobs.

The emulator really downloads the source, so sources are served by a loopback
`http.server` in a thread. Downloads take wall time: tests poll GetURLUploadInfos
with a deadline; every other phase moves only with `advance`.
"""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkvod.request.v20170321 import (
    CancelUrlUploadJobsRequest,
    GetURLUploadInfosRequest,
    GetVideoInfoRequest,
    UploadMediaByURLRequest,
)
from sources import SourceServer

from vodsync.emulator import Emulator

if TYPE_CHECKING:
    from emulator_world import World

pytest_plugins = ["emulator_world"]  # the world fixture

FILES = {
    "/media/clip.mp4": b"\x00\x00\x00\x18ftypmp42" + b"v" * 5000,
    "/media/a,b.mp4": b"comma in the name",
    "/media/noext": b"no extension here",
}
DEADLINE = 15.0


@pytest.fixture(scope="module")
def served() -> Iterator[SourceServer]:
    server = SourceServer()
    for path, body in FILES.items():
        server.add(path, body)
    yield server
    server.close()


@pytest.fixture(scope="module")
def source(served: SourceServer) -> str:
    return served.base


@pytest.fixture
def paced_world() -> Iterator[World]:
    """Phases spread over 60 s of emulator clock, so each one can be seen with `advance`."""
    from emulator_world import World, sdk_client

    with Emulator(port=0, transcode_seconds=0, url_job_seconds=60) as emulator:
        yield World(emulator, sdk_client(emulator))


def encode_urls(*urls: str) -> str:
    return ",".join(quote(u, safe="") for u in urls)


def submit(world: World, *urls: str, metadatas: list[dict] | None = None, **params: Any) -> list[dict]:
    if metadatas is not None:
        params["UploadMetadatas"] = json.dumps(metadatas)
    result = world.vod(UploadMediaByURLRequest.UploadMediaByURLRequest, UploadURLs=encode_urls(*urls), **params)
    return result["UploadJobs"]


def infos(world: World, *job_ids: str) -> dict:
    return world.vod(GetURLUploadInfosRequest.GetURLUploadInfosRequest, JobIds=",".join(job_ids))


def wait_for(world: World, job_id: str, statuses: set[str]) -> dict:
    deadline = time.monotonic() + DEADLINE
    while True:
        (info,) = infos(world, job_id)["URLUploadInfoList"]
        if info["Status"] in statuses:
            return info
        assert time.monotonic() < deadline, f"job still {info['Status']}"
        time.sleep(0.02)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- success / failure


def test_a_url_job_downloads_and_creates_the_video(world: World, source: str) -> None:
    url = f"{source}/media/clip.mp4"
    (job,) = submit(world, url, metadatas=[{"SourceURL": quote(url, safe=""), "Title": "from a url", "Tags": "web,clip"}],
                    UserData=json.dumps({"Extend": {"k": "v"}}))
    assert job["SourceURL"] == url
    info = wait_for(world, job["JobId"], {"SUCCESS", "DOWNLOAD_FAIL", "UPLOAD_FAIL"})
    assert info["Status"] == "SUCCESS", info
    assert info["FileSize"] == str(len(FILES["/media/clip.mp4"]))
    assert info["UploadURL"] == url
    assert {"CreationTime", "CompleteTime", "MediaId", "UserData"} <= set(info)
    assert all(isinstance(value, str) for value in info.values())

    video = world.vod(GetVideoInfoRequest.GetVideoInfoRequest, VideoId=info["MediaId"])["Video"]
    assert (video["Title"], video["Tags"], video["Status"]) == ("from a url", "web,clip", "Normal")
    assert video["Size"] == len(FILES["/media/clip.mp4"])
    vod_objects = [o for o in world.emulator.state()["objects"] if o["bucket"] == world.model.bucket]
    assert [o["size"] for o in vod_objects] == [len(FILES["/media/clip.mp4"])]


def test_a_missing_source_ends_in_download_fail(world: World, source: str) -> None:
    (job,) = submit(world, f"{source}/media/missing.mp4")
    info = wait_for(world, job["JobId"], {"SUCCESS", "DOWNLOAD_FAIL", "UPLOAD_FAIL"})
    assert info["Status"] == "DOWNLOAD_FAIL"
    assert info["ErrorCode"] and "404" in info["ErrorMessage"]
    assert "MediaId" not in info
    assert world.emulator.state()["videos"] == []


def test_a_source_on_an_oss_host_is_read_from_the_emulated_oss_as_an_anonymous_get(
        world: World, tmp_path) -> None:
    """Offline, OSS is the emulator: a URL on `<bucket>.oss-<region>.aliyuncs.com` names one of its
    own objects, fetched only from a public-read bucket (the demo's URL item works on any port)."""
    (tmp_path / "open-bucket" / "clips").mkdir(parents=True)
    (tmp_path / "open-bucket" / "clips" / "a.mp4").write_bytes(b"v" * 3000)
    world.emulator.publish_directory(tmp_path)
    world.emulator.oss.ensure_bucket("closed-bucket")
    world.emulator.oss.put_stream("closed-bucket", "b.mp4", io.BytesIO(b"w" * 10), length=10)
    host = "oss-cn-shanghai.aliyuncs.com"
    ok, private, missing = (submit(world, url)[0] for url in (
        f"https://open-bucket.{host}/clips/a.mp4", f"https://closed-bucket.{host}/b.mp4",
        f"https://open-bucket.{host}/clips/none.mp4"))
    done = wait_for(world, ok["JobId"], {"SUCCESS", "DOWNLOAD_FAIL", "UPLOAD_FAIL"})
    assert (done["Status"], done["FileSize"]) == ("SUCCESS", "3000"), done
    for job, status in ((private, "403"), (missing, "404")):
        failed = wait_for(world, job["JobId"], {"SUCCESS", "DOWNLOAD_FAIL", "UPLOAD_FAIL"})
        assert failed["Status"] == "DOWNLOAD_FAIL" and status in failed["ErrorMessage"], failed


def test_a_refused_connection_ends_in_download_fail(world: World) -> None:
    (job,) = submit(world, f"http://127.0.0.1:{closed_port()}/x.mp4")
    info = wait_for(world, job["JobId"], {"SUCCESS", "DOWNLOAD_FAIL", "UPLOAD_FAIL"})
    assert info["Status"] == "DOWNLOAD_FAIL" and info["ErrorCode"]


def test_the_same_url_twice_makes_two_jobs_and_two_videos(world: World, source: str) -> None:
    url = f"{source}/media/a,b.mp4"  # the comma survives because each URL is percent-encoded
    jobs = submit(world, url, url)
    assert len({j["JobId"] for j in jobs}) == 2
    media = {wait_for(world, j["JobId"], {"SUCCESS", "DOWNLOAD_FAIL"})["MediaId"] for j in jobs}
    assert len(media) == 2
    by_url = world.vod(GetURLUploadInfosRequest.GetURLUploadInfosRequest, UploadURLs=encode_urls(url))
    assert sorted(i["JobId"] for i in by_url["URLUploadInfoList"]) == sorted(j["JobId"] for j in jobs)
    assert by_url["NonExists"] == []


def test_file_extension_metadata_stands_in_for_a_missing_extension(world: World, source: str) -> None:
    url = f"{source}/media/noext"
    (job,) = submit(world, url, metadatas=[{"SourceURL": quote(url, safe=""), "Title": "no ext", "FileExtension": "mp4"}])
    info = wait_for(world, job["JobId"], {"SUCCESS", "DOWNLOAD_FAIL"})
    assert info["Status"] == "SUCCESS"


# ---------------------------------------------------------------- validation


def expect_error(world: World, code: str, request_cls: type, **params: Any) -> None:
    with pytest.raises(ServerException) as caught:
        world.vod(request_cls, **params)
    assert (caught.value.get_error_code(), caught.value.get_http_status()) == (code, 400)


def test_upload_media_by_url_validation(world: World, source: str) -> None:
    urls = [f"{source}/media/{i}.mp4" for i in range(21)]
    expect_error(world, "InvalidParameter.UploadURLs", UploadMediaByURLRequest.UploadMediaByURLRequest,
                 UploadURLs=encode_urls(*urls))
    expect_error(world, "InvalidParameter.UploadURLs", UploadMediaByURLRequest.UploadMediaByURLRequest,
                 UploadURLs=encode_urls(f"{source}/media/noext"))
    expect_error(world, "MissingParameter", UploadMediaByURLRequest.UploadMediaByURLRequest)
    assert len(submit(world, *urls[:20])) == 20  # exactly twenty is fine


def test_get_url_upload_infos_limits_and_unknown_ids(world: World, source: str) -> None:
    (job,) = submit(world, f"{source}/media/clip.mp4")
    ghost = "9" * 32
    result = infos(world, job["JobId"], ghost)
    assert [i["JobId"] for i in result["URLUploadInfoList"]] == [job["JobId"]]
    assert result["NonExists"] == [ghost]
    expect_error(world, "InvalidParameter.JobIds", GetURLUploadInfosRequest.GetURLUploadInfosRequest,
                 JobIds=",".join(f"{i:032x}" for i in range(11)))
    wait_for(world, job["JobId"], {"SUCCESS"})


# ---------------------------------------------------------------- phases and cancel


def test_phases_follow_the_emulator_clock(paced_world: World, source: str) -> None:
    world = paced_world
    url = f"{source}/media/clip.mp4"
    (job,) = submit(world, url, metadatas=[{"SourceURL": quote(url, safe=""), "Title": "paced"}])
    assert infos(world, job["JobId"])["URLUploadInfoList"][0]["Status"] == "PENDING"
    world.advance(16)
    assert infos(world, job["JobId"])["URLUploadInfoList"][0]["Status"] == "PROCESSING"
    world.advance(15)  # past created + S/2: the worker starts the download
    info = wait_for(world, job["JobId"], {"DOWNLOAD_SUCCESS", "UPLOADING", "DOWNLOAD_FAIL"})
    assert info["Status"] == "DOWNLOAD_SUCCESS"
    video = world.vod(GetVideoInfoRequest.GetVideoInfoRequest, VideoId=info["MediaId"])["Video"]
    assert video["Status"] == "Uploading"
    world.advance(11)
    assert infos(world, job["JobId"])["URLUploadInfoList"][0]["Status"] == "UPLOADING"
    world.advance(10)
    info = infos(world, job["JobId"])["URLUploadInfoList"][0]
    assert info["Status"] == "UPLOAD_SUCCESS" and "CompleteTime" not in info
    assert world.vod(GetVideoInfoRequest.GetVideoInfoRequest, VideoId=info["MediaId"])["Video"]["Status"] == "Normal"
    world.advance(10)
    info = infos(world, job["JobId"])["URLUploadInfoList"][0]
    assert info["Status"] == "SUCCESS" and "CompleteTime" in info


def test_a_job_not_yet_downloading_can_be_canceled(paced_world: World, source: str, served: SourceServer) -> None:
    world = paced_world
    url = f"{source}/media/never.mp4"
    before = served.hits[url.removeprefix(source)]
    (job,) = submit(world, url)
    ghost = "8" * 32
    result = world.vod(CancelUrlUploadJobsRequest.CancelUrlUploadJobsRequest, JobIds=f"{job['JobId']},{ghost}")
    assert (result["CanceledJobs"], result["NonExists"]) == ([job["JobId"]], [ghost])
    world.advance(120)
    (info,) = infos(world, job["JobId"])["URLUploadInfoList"]
    assert info["Status"] == "CANCELED" and "MediaId" not in info
    (entry,) = world.emulator.state()["url_jobs"]
    assert entry["record"]["download_started_at"] is None
    assert served.hits[url.removeprefix(source)] == before


def test_cancel_by_url_and_finished_jobs_stay_finished(world: World, source: str) -> None:
    url = f"{source}/media/clip.mp4"
    (job,) = submit(world, url)
    wait_for(world, job["JobId"], {"SUCCESS"})
    result = world.vod(CancelUrlUploadJobsRequest.CancelUrlUploadJobsRequest,
                       UploadUrls=encode_urls(url, f"{source}/unknown.mp4"))
    assert result["CanceledJobs"] == []
    assert result["NonExists"] == [f"{source}/unknown.mp4"]
    assert infos(world, job["JobId"])["URLUploadInfoList"][0]["Status"] == "SUCCESS"


def test_a_restored_unfinished_job_downloads_after_the_restart(paced_world: World, source: str) -> None:
    world = paced_world
    url = f"{source}/media/clip.mp4"
    (job,) = submit(world, url, metadatas=[{"SourceURL": quote(url, safe=""), "Title": "survivor"}])
    saved = json.loads(json.dumps(world.model.snapshot()))
    world.model.restore(saved)  # as after an emulator restart: the old worker is retired, a new one waits
    world.advance(31)
    info = wait_for(world, job["JobId"], {"DOWNLOAD_SUCCESS", "DOWNLOAD_FAIL"})
    assert info["Status"] == "DOWNLOAD_SUCCESS"
    world.advance(30)
    info = infos(world, job["JobId"])["URLUploadInfoList"][0]
    assert info["Status"] == "SUCCESS"
    assert len(world.emulator.state()["videos"]) == 1  # exactly one worker created the video
