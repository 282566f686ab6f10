"""Open once (issue 13): a file swapped after it was planned is never uploaded in its place.

Each test runs `vodsync apply` as a real process against the emulator. A slow fault holds the
first CreateUploadVideo back; as soon as the emulator has received it (the files were loaded,
hashed and planned by then), the test swaps the other items' files: a symlink to a secret
outside the repository renamed over one, a FIFO over another, a directory of a third's path
replaced by a symlink to a directory outside. The run must end within seconds, upload no
secret, and fail exactly those items with a message that says what happened.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import fastcrc
import pytest
from safetykit import Library, SourceServer, mp4

from vodsync.emulator import Emulator

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + b"s3cr3t" * 500
SLOW_CREATE = 3000  # ms: the window the swaps happen in (they happen as soon as the call arrives)
PART = 128 * 1024


@pytest.fixture
def lib(tmp_path: Path, emulator: Emulator, sources: SourceServer) -> Library:
    return Library(tmp_path, emulator, sources)


def _crc(data: bytes) -> int:
    return fastcrc.crc64.xz(data)


def _wait_for(emu: Emulator, call: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while emu.calls().get(call, 0) == 0:
        assert proc.poll() is None, "apply ended before the emulator saw " + call
        assert time.monotonic() < deadline, f"no {call} within 30 s"
        time.sleep(0.002)


def _swap_symlink(path: Path, target: Path) -> None:
    link = path.with_name(path.name + ".swap")
    link.symlink_to(target)
    os.replace(link, path)


def _swap_fifo(path: Path) -> None:
    fifo = path.with_name(path.name + ".swap")
    os.mkfifo(fifo)
    os.replace(fifo, path)


def _run_with_swaps(lib: Library, emu: Emulator, tmp_path: Path, swap, *extra: str) -> tuple[int, str, float]:
    emu.set_faults([{"match": "CreateUploadVideo", "error": "slow", "delay_ms": SLOW_CREATE, "count": 1}])
    log = tmp_path / "apply.log"
    began = time.monotonic()
    proc = lib.spawn("apply", "--concurrency", "1", "--wait", "0", *extra, log=log)
    try:
        _wait_for(emu, "CreateUploadVideo", proc)
        swap()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, log.read_text(errors="replace"), time.monotonic() - began


def test_files_swapped_after_planning_are_refused_and_no_secret_is_uploaded(
        lib: Library, emulator: Emulator, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "id_rsa"
    secret.write_bytes(SECRET)
    (outside / "clip.mp4").write_bytes(SECRET)  # what the swapped directory leads to
    first = mp4(9000, b"a")  # the largest: uploaded first, its create held back
    lib.write([
        {"name": "a-first", "type": "video", "title": "First", "file": lib.file("media/first.mp4", first)},
        {"name": "b-link", "type": "video", "title": "Link", "file": lib.file("media/link.mp4", mp4(5000, b"b"))},
        {"name": "c-fifo", "type": "video", "title": "Fifo", "file": lib.file("media/fifo.mp4", mp4(4000, b"c"))},
        {"name": "d-dir", "type": "video", "title": "Dir", "file": lib.file("media/sub/clip.mp4", mp4(3000, b"d"))},
    ])
    media = lib.manifests / "media"

    def swap() -> None:
        _swap_symlink(media / "link.mp4", secret)
        _swap_fifo(media / "fifo.mp4")
        (media / "sub").rename(media / "sub.old")
        (media / "sub").symlink_to(outside, target_is_directory=True)

    code, out, took = _run_with_swaps(lib, emulator, tmp_path, swap)
    assert took < 30, out  # never hangs on the FIFO
    assert code == 1, out
    objects = emulator.state()["objects"]
    assert _crc(SECRET) not in {o["crc64"] for o in objects}, out
    assert [o["crc64"] for o in objects] == [_crc(first)], out  # only the unswapped file went up
    assert "b-link" in out and "is now a symbolic link" in out, out
    assert "c-fifo" in out and "is not a regular file" in out, out
    assert "d-dir" in out and "is not the file that was planned" in out, out
    records = lib.records()
    assert records["a-first"].content_hash == f"{_crc(first):016x}"
    assert set(records) == {"a-first"}  # the others failed before anything was created for them
    assert [v["Title"] for v in emulator.state()["videos"]] == ["First"]


def test_a_file_swapped_during_its_upload_is_sent_from_the_planned_file(
        lib: Library, emulator: Emulator, tmp_path: Path) -> None:
    """Swapped after it was opened (during its own slow create, and a multipart one): every part
    still comes from the file that was planned, and what is recorded is its CRC-64."""
    secret = tmp_path / "id_rsa"
    secret.write_bytes(SECRET * 100)
    data = os.urandom(5 * PART + 1000)
    lib.write([{"name": "big", "type": "video", "title": "Big", "file": lib.file("media/big.mp4", data)}])
    code, out, _ = _run_with_swaps(
        lib, emulator, tmp_path, lambda: _swap_symlink(lib.manifests / "media/big.mp4", secret),
        "--part-size", str(PART), "--multipart-threshold", str(2 * PART),
    )
    assert code == 0, out
    [obj] = emulator.state()["objects"]
    assert obj["crc64"] == _crc(data) and obj["size"] == len(data), out
    assert emulator.calls()["oss:PUT"] >= 6  # multipart: the parts were read from the descriptor
    assert lib.records()["big"].content_hash == f"{_crc(data):016x}"


def test_dev_zero_swapped_in_ends_the_item_within_seconds(lib: Library, emulator: Emulator,
                                                          tmp_path: Path) -> None:
    lib.write([
        {"name": "a-first", "type": "video", "title": "First", "file": lib.file("media/first.mp4", mp4(9000))},
        {"name": "b-zero", "type": "video", "title": "Zero", "file": lib.file("media/zero.mp4", mp4(5000, b"z"))},
    ])
    code, out, took = _run_with_swaps(
        lib, emulator, tmp_path, lambda: _swap_symlink(lib.manifests / "media/zero.mp4", Path("/dev/zero")))
    assert took < SLOW_CREATE / 1000 + 20, out
    assert code == 1 and "b-zero" in out and "is now a symbolic link" in out, out
    assert len(emulator.state()["objects"]) == 1


def test_a_file_truncated_after_it_was_opened_fails_its_upload(emulator: Emulator, tmp_path: Path) -> None:
    """Cut short in place (same inode) after the check: the read comes up short and says so,
    instead of sending fewer bytes than announced (a request that would hang until a timeout)."""
    from vodsync.cloud.settings import CloudSettings
    from vodsync.cloud.upload import upload_file
    from vodsync.cloud.vod import VodClient
    from vodsync.errors import LocalFileRefused
    from vodsync.sourcefile import Planned, SourceFile

    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4(300_000))
    info = path.stat()
    client = VodClient(CloudSettings("emulator", "emulator-secret", endpoint=emulator.url))
    ticket = client.create_upload_video(title="t", file_name="clip.mp4")
    with SourceFile.open(path, Planned(info.st_size, info.st_mtime_ns, info.st_dev, info.st_ino)) as source:
        os.truncate(path, 1000)
        with pytest.raises(LocalFileRefused, match="shrank"):
            upload_file(ticket, source, refresh=None, checkpoint_dir=tmp_path / "ck")
    assert emulator.state()["objects"] == []
