"""The end-to-end scenario against a real VOD account (docs/live-testing.md).

Skipped unless `VODSYNC_LIVE_REGION`, `ALIBABA_CLOUD_ACCESS_KEY_ID` and
`ALIBABA_CLOUD_ACCESS_KEY_SECRET` are set (plus `ALIBABA_CLOUD_SECURITY_TOKEN` for STS
credentials). The URL and register kinds need what only the account owner can provide:
`VODSYNC_LIVE_URL` (a public media URL VOD can download) and `VODSYNC_LIVE_BUCKET` (an OSS
bucket in the region that is attached to VOD as storage; the test puts one small object
under the prefix there, registers it, and deletes it). `VODSYNC_LIVE_CATE_ID` puts everything in a dedicated
category. Every title and item name carries a unique prefix, and the test deletes all it
created (by the state's records, then by a title search for the prefix) however it ends.

The scenario is the emulator suite's: all five kinds created, a metadata update, a replace
(new bytes: a new image, the old one deleted), a prune, and gc finding nothing.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from clirun import Run, run_cli

LIVE_ENV = ("VODSYNC_LIVE_REGION", "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET")
CREDENTIAL_ENV = ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN")

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not all(os.environ.get(k) for k in LIVE_ENV),
                       reason="live VOD tests need VODSYNC_LIVE_REGION and Alibaba Cloud credentials"),
]


def _png(shade: int) -> bytes:
    """A valid 1x1 grey PNG (VOD checks image files)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = zlib.compress(bytes([0, shade % 256]))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


class LiveRepo:
    """A manifests directory, a state file and the CLI, all pointed at the live region."""

    def __init__(self, root: Path, prefix: str) -> None:
        self.root, self.prefix = root, prefix
        self.manifests = root / "repo" / "manifests"
        self.manifests.mkdir(parents=True)
        (root / "repo" / ".git").mkdir()
        self.state = root / "state.db"
        self.region = os.environ["VODSYNC_LIVE_REGION"]
        self.env = {k: os.environ[k] for k in CREDENTIAL_ENV if os.environ.get(k)}
        self.objects: list[tuple[object, str]] = []  # (oss2.Bucket, key) the test put

    def file(self, name: str, data: bytes) -> str:
        (self.manifests / name).write_bytes(data)
        return name

    def write(self, items: list[dict]) -> None:
        (self.manifests / "live.yaml").write_text(yaml.safe_dump({"media": items}, sort_keys=False))

    def cli(self, command: str, *extra: str) -> Run:
        argv = [command, "--region", self.region]
        if command in ("plan", "apply"):
            argv += ["-f", str(self.manifests)]
        argv += ["--state", str(self.state)]
        if command == "apply":
            argv += ["--yes", "--wait", "900"]
        return run_cli([*argv, *extra], env=self.env)

    def client(self):
        from vodsync.cloud.settings import CloudSettings
        from vodsync.cloud.vod import VodClient

        return VodClient(CloudSettings(self.env["ALIBABA_CLOUD_ACCESS_KEY_ID"],
                                       self.env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
                                       self.env.get("ALIBABA_CLOUD_SECURITY_TOKEN"), region=self.region,
                                       endpoint=os.environ.get("VODSYNC_ENDPOINT")))

    def oss_bucket(self, name: str):
        import oss2

        env = self.env
        token = env.get("ALIBABA_CLOUD_SECURITY_TOKEN")
        auth = (oss2.StsAuth(env["ALIBABA_CLOUD_ACCESS_KEY_ID"], env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"], token,
                             auth_version="v4") if token else
                oss2.AuthV4(env["ALIBABA_CLOUD_ACCESS_KEY_ID"], env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]))
        return oss2.Bucket(auth, f"https://oss-{self.region}.aliyuncs.com", name, region=self.region)

    def cleanup(self) -> list[str]:
        """Delete everything this run created: what the state records, then anything whose title
        carries the prefix (an interrupted create the state never learnt of). Returns what failed."""
        from vodsync.desired.items import Kind
        from vodsync.engine.ownership import delete_media, search
        from vodsync.state.store import StateStore

        client, failed = self.client(), []
        ids: dict[Kind, set[str]] = {Kind.VIDEO: set(), Kind.IMAGE: set(), Kind.ATTACHED: set()}
        if self.state.exists():
            with StateStore.open(self.state, readonly=True) as store:
                for r in store.records().values():
                    if r.remote_id:
                        ids[Kind.VIDEO if Kind(r.kind).remote_is_video else Kind(r.kind)].add(r.remote_id)
        for kind in ids:
            ids[kind] |= {h.media_id for h in search(client, kind, title=self.prefix)
                          if h.title is None or self.prefix in h.title}
            try:
                delete_media(client, kind, sorted(ids[kind]))
            except Exception as err:  # noqa: BLE001 - report every leftover, never stop cleaning
                failed.append(f"{kind}: {sorted(ids[kind])}: {err}")
        for bucket, key in self.objects:
            try:
                bucket.delete_object(key)
            except Exception as err:  # noqa: BLE001
                failed.append(f"oss object {key}: {err}")
        return failed


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[LiveRepo]:
    live = LiveRepo(tmp_path, f"vodsync-live-{uuid.uuid4().hex[:10]}")
    try:
        yield live
    finally:
        failed = live.cleanup()
        assert not failed, f"clean up by hand: {failed}"


def test_live_end_to_end(repo: LiveRepo) -> None:
    url, bucket_name = os.environ.get("VODSYNC_LIVE_URL"), os.environ.get("VODSYNC_LIVE_BUCKET")
    if not (url and bucket_name):
        pytest.skip("the url and register kinds need VODSYNC_LIVE_URL and VODSYNC_LIVE_BUCKET")
    p = repo.prefix
    video = os.environ.get("VODSYNC_LIVE_VIDEO")
    video_bytes = Path(video).read_bytes() if video else b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4000
    bucket = repo.oss_bucket(bucket_name)
    bucket.put_object(f"{p}/archive.mp4", video_bytes)
    repo.objects.append((bucket, f"{p}/archive.mp4"))
    file_url = f"https://{bucket_name}.oss-{repo.region}.aliyuncs.com/{p}/archive.mp4"
    common = {"tags": ["vodsync-live"]}
    if os.environ.get("VODSYNC_LIVE_CATE_ID"):
        common["cate_id"] = int(os.environ["VODSYNC_LIVE_CATE_ID"])
    items = [
        {"name": f"{p}/clip", "type": "video", "title": f"{p} clip", "file": repo.file("clip.mp4", video_bytes),
         "template_group_id": "VOD_NO_TRANSCODE", **common},
        {"name": f"{p}/poster", "type": "image", "title": f"{p} poster", "file": repo.file("poster.png", _png(1)),
         **common},
        {"name": f"{p}/subs", "type": "attached", "title": f"{p} subs", "business_type": "subtitle",
         "file": repo.file("subs.vtt", b"WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n"), **common},
        {"name": f"{p}/remote", "type": "url", "title": f"{p} remote", "url": url,
         "template_group_id": "VOD_NO_TRANSCODE", **common},
        {"name": f"{p}/archive", "type": "register", "title": f"{p} archive", "file_url": file_url, **common},
    ]
    repo.write(items)
    created = repo.cli("apply")
    assert created.code == 0, created
    assert repo.cli("plan", "--detailed-exitcode", "--refresh").code == 0

    # update: a new title is one UpdateVideoInfo, and VOD shows it
    items[0] = {**items[0], "title": f"{p} clip v2"}
    # replace: new bytes for the image make a new image and delete the old one
    items[1] = {**items[1], "file": repo.file("poster.png", _png(2))}
    repo.write(items)
    from vodsync.state.store import StateStore

    with StateStore.open(repo.state, readonly=True) as store:
        old_poster = store.get(f"{p}/poster").remote_id
        clip = store.get(f"{p}/clip").remote_id
    changed = repo.cli("apply")
    assert changed.code == 0, changed
    client = repo.client()
    assert client.get_video_infos([clip])[0][clip].title == f"{p} clip v2"
    assert client.get_image_info(old_poster) is None
    assert repo.cli("plan", "--detailed-exitcode", "--refresh").code == 0

    # prune: the subtitles leave the manifests and VOD
    with StateStore.open(repo.state, readonly=True) as store:
        subs = store.get(f"{p}/subs").remote_id
    repo.write([i for i in items if i["name"] != f"{p}/subs"])
    pruned = repo.cli("apply", "--prune")
    assert pruned.code == 0, pruned
    assert client.get_attached_media_infos([subs])[0] == {}

    gc = repo.cli("gc")
    assert gc.code == 0 and "Nothing to collect" in gc.out, gc
