"""`vodsync gc`: lists (dry run) and with `--yes` removes exactly what vodsync left behind.

Orphans are made the way interrupted runs make them (Create* calls whose IDs never
reached the state file), next to look-alikes that must survive: other people's
media, media a record owns, media still young enough to be filled, and an
interrupted video create the next apply will adopt by its ReferenceId.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import oss2
import pytest
from safetykit import Library, SourceServer, mp4, writes

import vodsync.engine.gc as gc
from vodsync.cloud.settings import CloudSettings
from vodsync.cloud.types import UploadTicket
from vodsync.cloud.upload import settle_checkpoints, upload_file
from vodsync.cloud.vod import VodClient
from vodsync.emulator import Emulator
from vodsync.engine.executor import reference_id, user_data
from vodsync.state.location import StateLocation
from vodsync.state.store import Record, RecordStatus, StateStore


@pytest.fixture
def lib(tmp_path: Path, emulator: Emulator, sources: SourceServer, monkeypatch: pytest.MonkeyPatch) -> Library:
    # gc measures age against "now"; the emulator's clock is the service's clock here.
    monkeypatch.setattr(gc, "_now", emulator.clock.now)
    return Library(tmp_path, emulator, sources)


def _checkpoints(state: Path) -> Path:
    """Where `vodsync` keeps the upload checkpoints of the state file `state`."""
    return StateLocation(path=state).local_dir / f"{state.name}.checkpoints"


def _client(emulator: Emulator) -> VodClient:
    return VodClient(CloudSettings("emulator", "emulator-secret", endpoint=emulator.url))


def _ids(emulator: Emulator) -> set[str]:
    s = emulator.state()
    return ({v["VideoId"] for v in s["videos"]} | {i["ImageId"] for i in s["images"]}
            | {a["MediaId"] for a in s["attached"]})


def test_nothing_to_collect(lib: Library) -> None:
    run = lib.cli("gc")
    assert run.code == 0 and "Nothing to collect" in run.out, run


def test_gc_finds_our_orphans_and_nothing_else(lib: Library, emulator: Emulator) -> None:
    c = _client(emulator)
    # Recorded items: one owned video, one interrupted video create (CREATING, no ID yet),
    # and an image record whose title gc may use to recognise our images.
    owned = c.create_upload_video(title="Owned", file_name="o.mp4", reference_id=reference_id("owned"),
                                  user_data=user_data("owned")).media_id
    adopt = c.create_upload_video(title="Adopt", file_name="a.mp4", reference_id=reference_id("adopt"),
                                  user_data=user_data("adopt")).media_id
    store = StateStore.open(lib.state)
    store.put_many([
        Record(name="owned", kind="video", status=RecordStatus.UPLOADING, source="/x", remote_id=owned),
        Record(name="adopt", kind="video", status=RecordStatus.CREATING, source="/y",
               reference_id=reference_id("adopt"), intent={"op": "create", "at": time.time()}),
        Record(name="poster", kind="image", status=RecordStatus.READY, source="/p", remote_id="img-gone",
               metadata={"title": "Poster"}),
    ])
    store.close()
    # The state has records but no namespace: it is a state of the name-only scheme, whose
    # markers (`user_data`) and ReferenceIds (`reference_id`) carry no namespace.
    ours = {
        c.create_upload_video(title="Lost", file_name="l.mp4", reference_id=reference_id("lost"),
                              user_data=user_data("lost")).media_id,
        c.create_upload_video(title="Lost too", file_name="l2.mp3", user_data=user_data("lost2")).media_id,
        c.create_upload_image(image_type="default", image_ext="png", title="Logo",
                              user_data=user_data("logo")).media_id,
        c.create_upload_attached_media(business_type="subtitle", media_ext="vtt", title="Subs",
                                       user_data=user_data("subs")).media_id,
    }
    theirs = {
        c.create_upload_video(title="Someone's", file_name="s.mp4").media_id,
        c.create_upload_video(title="Someone's ref", file_name="s.mp4", reference_id="their-ref-123").media_id,
        # our ReferenceId scheme but no marker: gc cannot see ReferenceIds in a search, and does not guess
        c.create_upload_video(title="Unmarked", file_name="u.mp4", reference_id=reference_id("unmarked")).media_id,
        c.create_upload_image(image_type="default", image_ext="png", title="Poster",
                              user_data={"Extend": {"team": "design"}}).media_id,
        # a title this state recorded, but no marker: not ours
        c.create_upload_image(image_type="default", image_ext="png", title="Poster").media_id,
        c.create_upload_image(image_type="default", image_ext="png", title="Poster (old)").media_id,
        c.create_upload_attached_media(business_type="subtitle", media_ext="vtt", title="Subs").media_id,
        # another state's marker for an item of the same name
        c.create_upload_attached_media(business_type="subtitle", media_ext="vtt", title="Subs",
                                       user_data={"Extend": {"vodsync": "subs", "ns": "other-team"}}).media_id,
    }
    emulator.advance(gc.CREDENTIAL_LIFETIME + 1)
    young = c.create_upload_video(title="Young", file_name="y.mp4", reference_id=reference_id("young")).media_id
    calls = writes(emulator)

    dry = lib.cli("gc")
    assert dry.code == 0, dry
    listed = {mid for mid in _ids(emulator) if mid in dry.out}
    assert listed == ours, dry.out
    assert "Dry run: nothing was changed" in dry.out
    assert writes(emulator) == calls, "a dry run makes no write call"

    run = lib.cli("gc", "--yes")
    assert run.code == 0, run
    assert _ids(emulator) == theirs | {owned, adopt, young}
    again = lib.cli("gc")
    assert "Nothing to collect" in again.out, again


def test_gc_never_touches_media_that_is_not_uploading(lib: Library, emulator: Emulator) -> None:
    """A finished video with our ReferenceId whose record is gone (e.g. the state file was lost)
    is not garbage: it is someone's content. Only media stuck in Uploading is."""
    c = _client(emulator)
    t = c.create_upload_video(title="Done", file_name="d.mp4", reference_id=reference_id("done"))
    bucket = oss2.Bucket(oss2.StsAuth(t.credential.access_key_id, t.credential.access_key_secret,
                                      t.credential.security_token, auth_version="v4"),
                         t.address.endpoint, t.address.bucket, region=t.address.region)
    bucket.put_object(t.address.key, mp4(2000))
    emulator.advance(gc.CREDENTIAL_LIFETIME * 3)
    run = lib.cli("gc", "--yes")
    assert run.code == 0 and "Nothing to collect" in run.out, run
    assert t.media_id in _ids(emulator)


def _interrupted_multipart(emulator: Emulator, ticket, path: Path, cp_dir: Path, parts: int) -> str:
    """What a process killed mid-upload leaves: an upload with some parts, and oss2's checkpoint."""
    cred = ticket.credential
    bucket = oss2.Bucket(oss2.StsAuth(cred.access_key_id, cred.access_key_secret, cred.security_token,
                                      auth_version="v4"),
                         ticket.address.endpoint, ticket.address.bucket, region=ticket.address.region)
    upload_id = bucket.init_multipart_upload(ticket.address.key).upload_id
    data = path.read_bytes()
    for n in range(parts):
        bucket.upload_part(ticket.address.key, upload_id, n + 1, data[n * 102400:(n + 1) * 102400])
    store = oss2.ResumableStore(root=str(cp_dir))
    record = {"op_type": "ResumableUpload", "upload_id": upload_id, "file_path": os.path.abspath(path),
              "size": len(data), "mtime": os.path.getmtime(path), "bucket": ticket.address.bucket,
              "key": ticket.address.key, "part_size": 102400}
    store.put(store.make_store_key(ticket.address.bucket, ticket.address.key, os.path.abspath(path)), record)
    return upload_id


def test_gc_aborts_abandoned_multipart_uploads(lib: Library, emulator: Emulator, tmp_path: Path) -> None:
    c = _client(emulator)
    cp_dir = _checkpoints(lib.state)
    big = tmp_path / "big.mp4"
    big.write_bytes(mp4(500_000))
    live = tmp_path / "live.mp4"
    live.write_bytes(mp4(400_000, b"L"))
    # An orphaned video (its create never reached the state) with a half-done upload: aborted.
    orphan = c.create_upload_video(title="Half", file_name="h.mp4", reference_id=reference_id("half"),
                                   user_data=user_data("half"))
    gone = _interrupted_multipart(emulator, orphan, big, cp_dir, parts=2)
    # An image's upload whose image was replaced: nothing can get a credential for that key.
    img = c.create_upload_image(image_type="default", image_ext="png", title="Gone")
    stranded = _interrupted_multipart(emulator, img, big, cp_dir, parts=1)
    # A live one: its record is still uploading that file, the next apply resumes it.
    mine = c.create_upload_video(title="Live", file_name="l.mp4", reference_id=reference_id("live"))
    kept = _interrupted_multipart(emulator, mine, live, cp_dir, parts=1)
    store = StateStore.open(lib.state)
    store.put(Record(name="live", kind="video", status=RecordStatus.UPLOADING, source=str(live),
                     remote_id=mine.media_id))
    store.close()
    # A temp file a killed process left before its rename.
    (cp_dir / ".py-oss-upload" / "abc.123.456.tmp").write_text('{"upload_id": ')
    emulator.advance(gc.CREDENTIAL_LIFETIME + 1)

    dry = lib.cli("gc")
    assert gone in dry.out and stranded in dry.out and kept not in dry.out, dry.out
    assert "abc.123.456.tmp" in dry.out
    assert len(emulator.state()["multipart_uploads"]) == 3

    run = lib.cli("gc", "--yes")
    assert run.code == 0, run
    uploads = {u["upload_id"] for u in emulator.state()["multipart_uploads"]}
    assert gone not in uploads, "aborted with the orphaned video's refreshed credential"
    assert kept in uploads and stranded in uploads
    assert "forgot upload " + stranded in run.out
    left = sorted(p.name for p in (cp_dir / ".py-oss-upload").iterdir())
    assert len(left) == 1 and json.loads((cp_dir / ".py-oss-upload" / left[0]).read_text())["upload_id"] == kept
    assert orphan.media_id not in _ids(emulator)


def _half_uploaded(emulator: Emulator, tmp_path: Path) -> tuple[VodClient, Path, UploadTicket, Path, str]:
    """A video whose 500 kB file has 2 of its 100 KiB parts in an interrupted upload: the
    client, the file, the ticket, the checkpoint directory and the upload's ID."""
    c = _client(emulator)
    path = tmp_path / "v.mp4"
    path.write_bytes(mp4(500_000))
    t = c.create_upload_video(title="V", file_name="v.mp4")
    cp_dir = tmp_path / "cp"
    return c, path, t, cp_dir, _interrupted_multipart(emulator, t, path, cp_dir, parts=2)


def test_an_upload_that_cannot_resume_aborts_the_old_one(emulator: Emulator, tmp_path: Path) -> None:
    """The file changed since the interrupted upload (or now goes in one PUT): oss2 would start
    afresh and leave the old upload's parts in OSS for good; upload_file aborts it first."""
    c, path, t, cp_dir, old = _half_uploaded(emulator, tmp_path)
    path.write_bytes(mp4(500_100, b"w"))  # changed
    upload_file(c.refresh_upload_video(video_id=t.media_id), path, refresh=None, checkpoint_dir=cp_dir,
                part_size=102400, multipart_threshold=204800)
    assert emulator.state()["multipart_uploads"] == []

    old = _interrupted_multipart(emulator, t, path, cp_dir, parts=2)
    upload_file(c.refresh_upload_video(video_id=t.media_id), path, refresh=None, checkpoint_dir=cp_dir)
    assert old not in {u["upload_id"] for u in emulator.state()["multipart_uploads"]}
    assert emulator.state()["multipart_uploads"] == []


def test_checkpoint_writes_cut_by_a_kill_are_settled(emulator: Emulator, tmp_path: Path) -> None:
    """A process killed between writing a checkpoint's temp file and renaming it: a whole one
    takes its place and its upload is resumed, one cut short goes; a write of this process stays."""
    c, path, t, cp_dir, upload_id = _half_uploaded(emulator, tmp_path)
    root = cp_dir / ".py-oss-upload"
    (name,) = [p.name for p in root.iterdir()]
    (root / name).rename(root / f"{name}.4194305.140.tmp")  # the rename never happened
    (root / "other.4194306.141.tmp").write_text('{"upload_id": "')  # killed mid-write
    mine = root / f"busy.{os.getpid()}.142.tmp"
    mine.write_text("")

    settle_checkpoints(cp_dir)
    assert sorted(p.name for p in root.iterdir()) == sorted([name, mine.name])

    puts = emulator.calls()["oss:PUT"]
    upload_file(c.refresh_upload_video(video_id=t.media_id), path, refresh=None, checkpoint_dir=cp_dir,
                part_size=102400, multipart_threshold=204800)
    assert emulator.calls()["oss:PUT"] - puts == 3, "the two parts already sent are not sent again"
    assert upload_id not in {u["upload_id"] for u in emulator.state()["multipart_uploads"]}


def test_gc_summary_counts_only_what_it_did_and_says_why_an_upload_stays(
        lib: Library, emulator: Emulator, tmp_path: Path) -> None:
    c = _client(emulator)
    cp_dir = _checkpoints(lib.state)
    big = tmp_path / "big.mp4"
    big.write_bytes(mp4(500_000))
    # The state will be of the name-only scheme (it has records before gc first reads it): its marker.
    orphan = c.create_upload_video(title="Half", file_name="h.mp4", reference_id=reference_id("half"),
                                   user_data=user_data("half"))
    aborted = _interrupted_multipart(emulator, orphan, big, cp_dir, parts=2)
    pic = tmp_path / "pic.png"
    pic.write_bytes(b"\x89PNG" + b"p" * 300_000)
    img = c.create_upload_image(image_type="default", image_ext="png", title="Pic")
    stranded = _interrupted_multipart(emulator, img, pic, cp_dir, parts=1)
    store = StateStore.open(lib.state)  # an image item whose upload was interrupted, then finished by a PUT
    store.put(Record(name="pic", kind="image", status=RecordStatus.READY, source=str(pic), remote_id=img.media_id))
    store.close()
    emulator.advance(gc.CREDENTIAL_LIFETIME + 1)

    run = lib.cli("gc", "--yes")
    assert run.code == 0, run
    assert "Removing" not in run.out, "nothing is claimed before it is done"
    assert f"aborted upload {aborted}" in run.out
    assert f"forgot upload {stranded}" in run.out
    assert f"belongs to the image media {img.media_id} of item 'pic'" in run.out, run.out
    assert ("Done: deleted 1 orphaned media, aborted 1 multipart upload(s), removed 0 stray checkpoint file(s), "
            "1 upload(s) could not be aborted (why is said above).") in run.out, run.out
    assert {u["upload_id"] for u in emulator.state()["multipart_uploads"]} == {stranded}


def test_pruning_an_item_aborts_its_interrupted_multipart_upload(
        lib: Library, emulator: Emulator, tmp_path: Path) -> None:
    keep = lib.file("media/keep.mp4", mp4(300))
    lib.write([{"name": "keep", "type": "video", "file": keep}])
    assert lib.cli("apply").code == 0
    c = _client(emulator)
    big = tmp_path / "big.mp4"
    big.write_bytes(mp4(500_000))
    ticket = c.create_upload_video(title="Gone", file_name="g.mp4", reference_id=reference_id("gone"))
    upload = _interrupted_multipart(emulator, ticket, big, _checkpoints(lib.state), parts=2)
    store = StateStore.open(lib.state)  # what a run interrupted mid-upload records
    store.put(Record(name="gone", kind="video", status=RecordStatus.UPLOADING, source=str(big),
                     remote_id=ticket.media_id, origin="manifest"))
    store.close()

    run = lib.cli("apply", "--prune")
    assert run.code == 0, run
    assert upload not in {u["upload_id"] for u in emulator.state()["multipart_uploads"]}
    assert ticket.media_id not in _ids(emulator)
    assert not list((_checkpoints(lib.state) / ".py-oss-upload").iterdir())
    assert "aborted the interrupted upload" in run.err, run
