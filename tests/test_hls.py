"""HLS (issue 12 point 6): a local `.m3u8` video goes up with every segment it names.

VOD wants the playlist at `UploadAddress.FileName` and each segment at
`UploadAddress.ObjectPrefix + name` (vod-api.md §00, as the official uploader does it); the
emulator fails a video whose landed playlist names a segment that is not there.
"""

from __future__ import annotations

import base64
import json
import os
import time

import fastcrc
import pytest

pytest.register_assert_rewrite("clikit")
from clikit import Workspace  # noqa: E402

pytest_plugins = ["clikit"]  # the `ws` fixture

SEGMENTS = {"seg0.ts": b"\x47" * 5000, "seg1.ts": b"\x47\x01" * 3000, "parts/seg2.ts": b"\x47\x02" * 700}
PLAYLIST = (
    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n"
    + "".join(f"#EXTINF:4.0,\n{name}\n" for name in SEGMENTS)
    + "#EXT-X-ENDLIST\n"
).encode()


def _write_hls(ws: Workspace) -> None:
    ws.file("media/show/index.m3u8", PLAYLIST)
    for name, data in SEGMENTS.items():
        ws.file(f"media/show/{name}", data)


def _objects(ws: Workspace) -> dict[str, dict]:
    return {o["key"]: o for o in ws.vod()["objects"]}


def test_a_playlist_goes_up_with_every_segment_under_the_object_prefix(ws: Workspace) -> None:
    _write_hls(ws)
    ws.manifest([{"name": "show", "type": "video", "file": "media/show/index.m3u8", "title": "Show"}])
    total = len(PLAYLIST) + sum(len(d) for d in SEGMENTS.values())
    plan = ws.cli("plan", "--json")
    assert plan.code == 0, plan
    [change] = plan.json()["changes"]
    assert change["upload_bytes"] == total  # the segments are counted in the plan's bytes

    run = ws.apply()
    assert run.code == 0, run
    [video] = ws.vod()["videos"]
    assert video["Status"] != "UploadFail", video
    objects = _objects(ws)
    playlist_key = video["FileName"]
    prefix = playlist_key.rpartition("/")[0] + "/"
    assert objects[playlist_key]["crc64"] == fastcrc.crc64.xz(PLAYLIST)
    for name, data in SEGMENTS.items():
        assert objects[prefix + name]["crc64"] == fastcrc.crc64.xz(data), name
    assert len(objects) == 1 + len(SEGMENTS)
    assert ws.cli("plan", "--detailed-exitcode").code == 0

    # A changed segment (same playlist) is new content: the video is replaced, its id kept.
    new = b"\x47\x09" * 3000
    path = ws.file("media/show/seg1.ts", new)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    plan = ws.cli("plan", "--json", "--detailed-exitcode")
    assert plan.code == 2 and [c["action"] for c in plan.json()["changes"]] == ["replace"], plan
    run = ws.apply()
    assert run.code == 0, run
    assert _objects(ws)[prefix + "seg1.ts"]["crc64"] == fastcrc.crc64.xz(new)
    assert [v["VideoId"] for v in ws.vod()["videos"]] == [video["VideoId"]]
    assert ws.cli("plan", "--detailed-exitcode").code == 0


@pytest.mark.parametrize(("segment", "words"), [
    ("../../outside.ts", "without '..'"),
    ("missing.ts", "file not found: segment 'missing.ts'"),
    ("http://cdn.example.com/a.ts", "must be a file beside the playlist"),
    ("/etc/passwd", "must be a file beside the playlist"),
])
def test_a_bad_segment_is_a_located_manifest_error(ws: Workspace, segment: str, words: str) -> None:
    (ws.root / "outside.ts").write_bytes(b"secret")
    ws.file("media/show/index.m3u8", f"#EXTM3U\n#EXTINF:4.0,\n{segment}\n#EXT-X-ENDLIST\n".encode())
    ws.manifest([{"name": "show", "type": "video", "file": "media/show/index.m3u8"}])
    before = ws.calls()
    for command in ("validate", "plan", "apply"):
        run = ws.cli(command)
        assert run.code == 1, run
        assert "library.yaml:4" in run.err and words in run.err, run
    assert ws.calls() == before


def test_a_segment_linking_out_of_the_roots_is_refused(ws: Workspace) -> None:
    (ws.root / "secret.ts").write_bytes(b"secret")
    ws.file("media/show/index.m3u8", b"#EXTM3U\n#EXTINF:4.0,\nlink.ts\n#EXT-X-ENDLIST\n")
    (ws.manifests / "media/show/link.ts").symlink_to(ws.root / "secret.ts")
    ws.manifest([{"name": "show", "type": "video", "file": "media/show/index.m3u8"}])
    run = ws.cli("plan")
    assert run.code == 1 and "outside the allowed roots" in run.err, run


def test_a_master_playlist_is_refused(ws: Workspace) -> None:
    ws.file("media/master.m3u8", b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow/index.m3u8\n")
    ws.manifest([{"name": "show", "type": "video", "file": "media/master.m3u8"}])
    run = ws.cli("validate")
    assert run.code == 1 and "master playlist" in run.err, run


def _decode(blob: str) -> dict:
    return json.loads(base64.b64decode(blob))


def test_emulator_m3u8_address_has_an_object_prefix_and_a_playlist_alone_fails(emulator, vod_sdk_client) -> None:
    import oss2
    from aliyunsdkvod.request.v20170321.CreateUploadVideoRequest import CreateUploadVideoRequest

    request = CreateUploadVideoRequest()
    request.set_Title("hls")
    request.set_FileName("index.m3u8")
    request.set_protocol_type("http")
    created = json.loads(vod_sdk_client.do_action_with_exception(request))
    address, auth = _decode(created["UploadAddress"]), _decode(created["UploadAuth"])
    prefix = address["ObjectPrefix"]
    assert address["FileName"].startswith(prefix) and prefix.endswith("/")
    bucket = oss2.Bucket(oss2.StsAuth(auth["AccessKeyId"], auth["AccessKeySecret"], auth["SecurityToken"],
                                      auth_version="v4"), address["Endpoint"], address["Bucket"],
                         region=auth["Region"])
    bucket.put_object(prefix + "a.ts", b"\x47" * 10)  # the token covers the prefix
    bucket.put_object(address["FileName"], b"#EXTM3U\n#EXTINF:4,\na.ts\n#EXTINF:4,\nb.ts\n#EXT-X-ENDLIST\n")
    [video] = emulator.state()["videos"]
    assert video["Status"] == "UploadFail"  # b.ts never arrived


def test_a_dropped_playlist_fails_with_a_reason(tmp_path) -> None:
    """A drop folder cannot tell which dropped files are a playlist's segments: it refuses it."""
    from vodsync.config import DropFolderSettings
    from vodsync.desired.dropfolder import DropFolder

    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "show.m3u8").write_bytes(PLAYLIST)
    now = [1000.0]
    drop = DropFolder(DropFolderSettings(path=str(folder), label="inbox", stable_seconds=1), clock=lambda: now[0])
    drop.scan()
    now[0] += 10
    (failure,) = drop.scan().failed
    assert failure.path == folder / "show.m3u8" and "HLS playlist cannot be dropped alone" in failure.reason
