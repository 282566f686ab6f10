"""Upload progress that moves, and stopping at a part boundary (issue 11, points 3 and 4).

`upload_file` against the emulator's OSS: progress counts the bytes of a part as they go out
(not only finished parts); a stop asked for mid-upload ends it before its next part; a resumed
upload counts only the bytes still to send.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION

from vodsync.cloud.settings import CloudSettings
from vodsync.cloud.upload import upload_file
from vodsync.cloud.vod import VodClient
from vodsync.errors import UploadInterrupted

MiB = 1024 * 1024


@pytest.fixture
def client(emulator) -> VodClient:
    return VodClient(CloudSettings(ACCESS_KEY_ID, ACCESS_KEY_SECRET, region=REGION, endpoint=emulator.url))


def _file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "f.mp4"
    path.write_bytes(os.urandom(size))
    return path


def _parts(emulator) -> int:
    return sum(u["parts"] for u in emulator.state()["multipart_uploads"])


def test_progress_counts_bytes_within_a_part(emulator, client, tmp_path) -> None:
    path = _file(tmp_path, 6 * MiB)
    ticket = client.create_upload_video(title="p", file_name="f.mp4")
    seen: list[tuple[int, int]] = []
    part = 3 * MiB  # sent in blocks of 1 MiB (`_LargeBlockAdapter`)
    upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "cp", part_size=part, multipart_threshold=MiB,
                threads=1, progress=lambda done, total: seen.append((done, total)))
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1] == (6 * MiB, 6 * MiB)
    assert any(d % part for d in done), done  # moved while a part was being sent
    assert {t for _, t in seen} == {6 * MiB}


def test_a_stop_ends_a_multipart_upload_at_the_next_part_and_a_resume_counts_only_the_rest(
        emulator, client, tmp_path) -> None:
    path = _file(tmp_path, 4 * MiB)
    ticket = client.create_upload_video(title="p", file_name="f.mp4")
    sent: list[int] = []
    kwargs = {"refresh": None, "checkpoint_dir": tmp_path / "cp", "part_size": MiB, "multipart_threshold": MiB,
              "threads": 1}
    with pytest.raises(UploadInterrupted):
        upload_file(ticket, path, progress=lambda done, total: sent.append(done),
                    stop=lambda: bool(sent) and sent[-1] >= 2 * MiB - 64 * 1024, **kwargs)
    assert _parts(emulator) == 2  # the part under way when the stop came was finished, no more

    seen: list[tuple[int, int]] = []
    result = upload_file(ticket, path, progress=lambda done, total: seen.append((done, total)), **kwargs)
    assert result.resumed_bytes == 2 * MiB and result.size == 4 * MiB
    assert {t for _, t in seen} == {2 * MiB} and seen[-1] == (2 * MiB, 2 * MiB)


def test_a_single_put_has_no_part_boundary_and_completes(emulator, client, tmp_path) -> None:
    path = _file(tmp_path, 300 * 1024)
    ticket = client.create_upload_video(title="s", file_name="f.mp4")
    result = upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "cp", stop=lambda: True)
    assert result.size == 300 * 1024 and result.resumed_bytes == 0
