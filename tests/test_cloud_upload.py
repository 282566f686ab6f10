"""upload_file against the emulator's OSS: PUT and multipart, CRC, refresh, resume, retries.

Parts are counted with the emulator's `oss:PUT` call counter; token expiry is
made with `advance` (server side) or an injected clock (client side), never by
waiting.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import oss2
import pytest
from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION

from vodsync.cloud.retry import RetryPolicy
from vodsync.cloud.settings import CloudSettings
from vodsync.cloud.types import UploadAddress, UploadCredential, UploadTicket
from vodsync.cloud.upload import _CredentialHolder, choose_part_size, upload_file
from vodsync.cloud.vod import VodClient
from vodsync.errors import CloudError, CredentialExpired

MiB = 1024 * 1024
PART = 8 * MiB


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> tuple[Path, int]:
    """40 MiB of random bytes (5 parts of 8 MiB) and its CRC-64."""
    path = tmp_path_factory.mktemp("data") / "big.mp4"
    data = os.urandom(40 * MiB)
    path.write_bytes(data)
    return path, _crc64(data)


def _crc64(data: bytes) -> int:
    crc = oss2.utils.Crc64()
    crc.update(data)
    return crc.crc


@pytest.fixture
def client(emulator) -> VodClient:
    return VodClient(
        CloudSettings(ACCESS_KEY_ID, ACCESS_KEY_SECRET, region=REGION, endpoint=emulator.url),
        policy=RetryPolicy(seed=3),
        sleep=lambda s: None,
    )


def puts(emulator) -> int:
    return emulator.calls().get("oss:PUT", 0)


def stored(emulator, ticket: UploadTicket) -> dict:
    [obj] = [o for o in emulator.state()["objects"] if o["key"] == ticket.address.key]
    return obj


def small_upload(client: VodClient, tmp_path: Path) -> tuple[bytes, Path, UploadTicket]:
    """300 KiB of random bytes (one PUT, below the multipart threshold) and a video ticket for them."""
    data = os.urandom(300 * 1024)
    path = tmp_path / "small.mp4"
    path.write_bytes(data)
    return data, path, client.create_upload_video(title="s", file_name="small.mp4")


def refresher(client: VodClient, ticket: UploadTicket, log: list | None = None):
    def refresh() -> UploadTicket:
        if log is not None:
            log.append(1)
        return client.refresh_upload_video(video_id=ticket.media_id)

    return refresh


# ---------------------------------------------------------------- the happy paths


@pytest.mark.parametrize(
    ("size", "threads", "part"),
    [
        (17 * MiB, 4, 8 * MiB),  # small files: the 8 MiB floor
        (40 * MiB, 4, 10 * MiB),  # one part per thread
        (128 * MiB, 4, 32 * MiB),
        (128 * MiB + 1, 4, 32 * MiB),  # never above the ceiling
        (61 * MiB, 4, 16 * MiB),  # 15.25 MiB per thread, rounded up to whole MiB
        (4096 * MiB, 4, 32 * MiB),  # large files: the 32 MiB ceiling
        (40 * MiB, 0, 32 * MiB),
    ],
)
def test_default_part_size_is_one_part_per_thread_within_8_to_32_mib(size, threads, part):
    assert choose_part_size(size, threads) == part


def test_without_a_part_size_each_thread_sends_one_part(emulator, client, tmp_path, big_file):
    path, crc = big_file
    ticket = client.create_upload_video(title="b", file_name="big.mp4")
    result = upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "ck", threads=4)
    assert result.crc64 == crc == stored(emulator, ticket)["crc64"]
    assert puts(emulator) == 4 and result.etag.endswith("-4")  # 40 MiB: 4 parts of 10 MiB



def test_small_file_is_one_put_with_crc(emulator, client, tmp_path):
    data, path, ticket = small_upload(client, tmp_path)
    seen: list[tuple[int, int]] = []
    result = upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "ck", progress=lambda d, t: seen.append((d, t)))
    assert result.size == len(data)
    assert result.crc64 == _crc64(data) == stored(emulator, ticket)["crc64"]
    assert result.etag == stored(emulator, ticket)["etag"]
    assert puts(emulator) == 1 and emulator.calls().get("oss:POST", 0) == 0
    assert seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_multipart_parallel_upload_with_crc_and_private_checkpoint(emulator, client, tmp_path, big_file):
    path, crc = big_file
    ticket = client.create_upload_video(title="b", file_name="big.mp4")
    checkpoint = tmp_path / "ck"
    modes: list[int] = []
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        for f in checkpoint.rglob("*"):
            if f.is_file():
                modes.append(stat.S_IMODE(f.stat().st_mode))

    result = upload_file(ticket, path, refresh=None, checkpoint_dir=checkpoint, part_size=PART, threads=4, progress=progress)
    assert result.size == 40 * MiB
    assert result.crc64 == crc == stored(emulator, ticket)["crc64"]
    assert result.etag.endswith("-5")
    assert puts(emulator) == 5
    assert modes and set(modes) == {0o600}
    assert seen == sorted(seen) and seen[-1] == 40 * MiB and len(seen) >= 5  # one step per part at least
    assert not [f for f in checkpoint.rglob("*") if f.is_file()]  # record removed after completion


# ---------------------------------------------------------------- credentials


def test_sts_expiry_mid_upload_refreshes_and_sends_only_missing_parts(emulator, client, tmp_path, big_file):
    path, crc = big_file
    ticket = client.create_upload_video(title="b", file_name="big.mp4")
    at_refresh: list[tuple[int, int]] = []
    expired = []

    def progress(done: int, total: int) -> None:
        if done >= 2 * PART and not expired:
            expired.append(emulator.advance(emulator.sts_ttl + 10))  # the token dies server-side

    def refresh() -> UploadTicket:
        [upload] = emulator.state()["multipart_uploads"]
        at_refresh.append((puts(emulator), upload["parts"]))
        return client.refresh_upload_video(video_id=ticket.media_id)

    result = upload_file(ticket, path, refresh=refresh, checkpoint_dir=tmp_path / "ck", part_size=PART, threads=1,
                         progress=progress)
    assert result.crc64 == crc == stored(emulator, ticket)["crc64"]
    assert client.calls["RefreshUploadVideo"] == 1
    [(puts_before, parts_done)] = at_refresh
    assert parts_done == 2 and puts_before == 3  # two good parts + the one refused with 403
    assert puts(emulator) - puts_before == 5 - parts_done  # only the missing parts after the refresh


def test_sts_expiry_with_parallel_parts_never_restarts(emulator, client, tmp_path, big_file):
    path, crc = big_file
    ticket = client.create_upload_video(title="b", file_name="big.mp4")
    expired: list[float] = []

    def progress(done: int, total: int) -> None:
        if done >= PART and not expired:
            expired.append(emulator.advance(emulator.sts_ttl + 10))

    result = upload_file(ticket, path, refresh=refresher(client, ticket), checkpoint_dir=tmp_path / "ck",
                         part_size=PART, threads=4, progress=progress)
    assert result.crc64 == crc == stored(emulator, ticket)["crc64"]
    assert 1 <= client.calls["RefreshUploadVideo"] <= 3
    assert emulator.calls()["oss:POST"] == 2  # one InitiateMultipartUpload, one Complete: never restarted
    assert puts(emulator) <= 5 + 4  # at most one refused attempt per thread


def test_proactive_refresh_before_the_deadline(emulator, client, tmp_path, big_file):
    path, crc = big_file
    ticket = client.create_upload_video(title="b", file_name="big.mp4")
    now = [ticket.credential.deadline - 3000]
    puts_at_refresh: list[int] = []

    def progress(done: int, total: int) -> None:
        if done >= 2 * PART:
            now[0] = max(now[0], ticket.credential.deadline - 100)  # inside the 300 s margin

    def refresh() -> UploadTicket:
        puts_at_refresh.append(puts(emulator))
        return client.refresh_upload_video(video_id=ticket.media_id)

    result = upload_file(ticket, path, refresh=refresh, checkpoint_dir=tmp_path / "ck", part_size=PART, threads=1,
                         progress=progress, clock=lambda: now[0], refresh_margin=300)
    assert result.crc64 == crc
    assert puts_at_refresh == [2]  # refreshed while signing part 3, before OSS ever refused anything
    assert puts(emulator) == 5  # no 403, no part sent twice


def test_expired_token_without_refresh_raises_credential_expired(emulator, client, tmp_path):
    path = tmp_path / "small.mp4"
    path.write_bytes(b"x" * 1000)
    ticket = client.create_upload_video(title="s", file_name="small.mp4")
    emulator.advance(emulator.sts_ttl + 10)
    with pytest.raises(CredentialExpired) as caught:
        upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "ck")
    err = caught.value
    assert err.code in {"SecurityTokenExpired", "InvalidAccessKeyId"} and err.status == 403 and err.retryable
    for secret in (ticket.credential.access_key_id, ticket.credential.access_key_secret,
                   ticket.credential.security_token):
        assert secret not in str(err) and secret not in repr(err)
        assert secret not in repr(ticket)


def test_reactive_refreshes_are_bounded(emulator, client, tmp_path):
    path = tmp_path / "small.mp4"
    path.write_bytes(b"x" * 1000)
    ticket = client.create_upload_video(title="s", file_name="small.mp4")
    emulator.advance(emulator.sts_ttl + 10)
    calls: list[int] = []

    def stale() -> UploadTicket:
        calls.append(1)
        return ticket  # a "fresh" ticket that is just as dead

    with pytest.raises(CredentialExpired):
        upload_file(ticket, path, refresh=stale, checkpoint_dir=tmp_path / "ck")
    assert len(calls) == 3 and puts(emulator) == 4


def _expire_after_each_part(emulator, key: str, parts: int = 5):
    """A progress callback that lets the upload token die whenever a part lands (but the last), as a
    2-second token does on a slow link: the next request is refused, and the upload must refresh
    reactively. Client-side time stands still, so no refresh is proactive. "A part landed" is read
    from the emulator (progress also moves within parts), so the trigger does not depend on how
    progress is counted."""
    landed = [0]

    def progress(done: int, total: int) -> None:
        now = sum(u["parts"] for u in emulator.state()["multipart_uploads"] if u["key"] == key)
        if landed[0] < now < parts:
            landed[0] = now
            emulator.advance(emulator.sts_ttl + 1)

    return progress


def test_refreshes_that_make_progress_are_not_capped(emulator, client, tmp_path, big_file):
    """Five parts, the token dying after each of the first four: four reactive refreshes, each
    followed by a part landing, and the upload completes."""
    path, crc = big_file
    ticket = client.create_upload_video(title="b", file_name="big.mp4")
    calls: list[int] = []
    result = upload_file(ticket, path, refresh=refresher(client, ticket, calls), checkpoint_dir=tmp_path / "ck",
                         part_size=PART, threads=1, progress=_expire_after_each_part(emulator, ticket.address.key),
                         clock=lambda: ticket.credential.deadline - 3000, sleep=lambda s: None)
    assert result.crc64 == crc == stored(emulator, ticket)["crc64"]
    assert len(calls) == 4
    assert emulator.calls()["oss:POST"] == 2  # one Initiate, one Complete: resumed each time, never restarted


def test_refreshes_without_progress_stay_bounded_after_progress(emulator, client, tmp_path, big_file):
    """Progress earns no credit: once refreshes stop buying parts, three more and the upload fails."""
    path, _ = big_file
    ticket = client.create_upload_video(title="b", file_name="big.mp4")
    calls: list[int] = []

    def refresh() -> UploadTicket:
        calls.append(1)
        fresh = client.refresh_upload_video(video_id=ticket.media_id)
        if len(calls) > 2:
            emulator.advance(emulator.sts_ttl + 1)  # from the third on, each new token is dead on arrival
        return fresh

    with pytest.raises(CredentialExpired):
        upload_file(ticket, path, refresh=refresh, checkpoint_dir=tmp_path / "ck", part_size=PART, threads=1,
                    progress=_expire_after_each_part(emulator, ticket.address.key),
                    clock=lambda: ticket.credential.deadline - 3000, sleep=lambda s: None)
    assert len(calls) == 2 + 3  # two that bought a part each, then three that bought nothing
    [upload] = [u for u in emulator.state()["multipart_uploads"] if u["key"] == ticket.address.key]
    assert upload["parts"] == 3


def test_refresh_that_moves_the_address_is_refused(emulator, client, tmp_path):
    path = tmp_path / "small.mp4"
    path.write_bytes(b"x" * 1000)
    ticket = client.create_upload_video(title="s", file_name="small.mp4")
    other = client.create_upload_video(title="o", file_name="other.mp4")
    emulator.advance(emulator.sts_ttl + 10)
    with pytest.raises(CloudError) as caught:
        upload_file(ticket, path, refresh=lambda: other, checkpoint_dir=tmp_path / "ck")
    assert caught.value.code == "UploadAddressChanged" and not caught.value.retryable


def _ticket(deadline: float) -> UploadTicket:
    return UploadTicket("m", UploadAddress("http://127.0.0.1:1", "b", "k"),
                        UploadCredential("id", "secret", "token", deadline))


def test_short_lived_tokens_do_not_cause_a_refresh_storm():
    now = [1000.0]
    refreshed: list[float] = []

    def refresh() -> UploadTicket:
        refreshed.append(now[0])
        return _ticket(now[0] + 60)

    holder = _CredentialHolder(_ticket(1060), refresh, lambda: now[0], margin=300)
    for _ in range(10):
        holder.get_credentials()
    assert refreshed == []  # a 60 s token is kept for half its life, not refreshed at once
    now[0] = 1031
    for _ in range(10):
        holder.get_credentials()
    assert refreshed == [1031]


def test_failed_proactive_refresh_keeps_a_still_valid_token():
    now = [1000.0]

    def refresh() -> UploadTicket:
        raise CloudError("Throttling", "slow down", retryable=True)

    holder = _CredentialHolder(_ticket(1200), refresh, lambda: now[0], margin=300)
    assert holder.get_credentials().get_security_token() == "token"
    now[0] = 1201
    with pytest.raises(CloudError):
        holder.get_credentials()


# ---------------------------------------------------------------- retries and resume


def test_oss_5xx_and_resets_are_retried_and_resume(emulator, client, tmp_path, big_file):
    path, crc = big_file
    ticket = client.create_upload_video(title="b", file_name="big.mp4")
    slept: list[float] = []
    emulator.set_faults([
        {"match": "oss:PUT", "error": "InternalError", "count": 1},
        {"match": "oss:PUT", "error": "reset", "count": 1},
    ])
    result = upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "ck", part_size=PART, threads=4,
                         policy=RetryPolicy(seed=1), sleep=slept.append)
    assert result.crc64 == crc == stored(emulator, ticket)["crc64"]
    assert 1 <= len(slept) <= 2
    assert emulator.calls()["oss:POST"] == 2  # one init, one complete: resumed, never restarted


def test_checkpoint_resumes_a_later_call_with_only_missing_parts(emulator, client, tmp_path, big_file):
    path, crc = big_file
    ticket = client.create_upload_video(title="b", file_name="big.mp4")
    checkpoint = tmp_path / "ck"
    broken: list[int] = []

    def progress(done: int, total: int) -> None:
        if done >= 3 * PART and not broken:
            broken.append(1)
            emulator.set_faults([{"match": "oss:PUT", "error": "InternalError"}])

    with pytest.raises(CloudError) as caught:
        upload_file(ticket, path, refresh=None, checkpoint_dir=checkpoint, part_size=PART, threads=1,
                    progress=progress, policy=RetryPolicy(attempts=1))
    assert caught.value.code == "InternalError" and caught.value.retryable
    emulator.set_faults([])
    before = puts(emulator)
    fresh = client.refresh_upload_video(video_id=ticket.media_id)
    result = upload_file(fresh, path, refresh=None, checkpoint_dir=checkpoint, part_size=PART, threads=4)
    assert result.crc64 == crc
    assert puts(emulator) - before == 2  # parts 4 and 5 only


def test_permanent_oss_error_fails_at_once(emulator, client, tmp_path):
    path = tmp_path / "small.mp4"
    path.write_bytes(b"x" * 1000)
    ticket = client.create_upload_video(title="s", file_name="small.mp4")
    emulator.set_faults([{"match": "oss:PUT", "error": "AccessDenied"}])
    slept: list[float] = []
    with pytest.raises(CloudError) as caught:
        upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "ck", sleep=slept.append)
    assert (caught.value.code, caught.value.status, caught.value.retryable) == ("AccessDenied", 403, False)
    assert not isinstance(caught.value, CredentialExpired)
    assert puts(emulator) == 1 and slept == []


def test_loopback_upload_ignores_proxy_variables(emulator, client, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    path = tmp_path / "small.mp4"
    path.write_bytes(b"y" * 1000)
    ticket = client.create_upload_video(title="s", file_name="small.mp4")
    assert upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "ck").size == 1000


def test_object_whose_crc_differs_from_the_local_file_is_uploaded_again_then_refused(
    emulator, client, tmp_path, monkeypatch
):
    # OSS reports the whole object's CRC-64; it is compared with the local file's. Here the
    # local side is made to disagree, as when the file changed under the upload.
    from vodsync.cloud import upload as upload_module

    path = tmp_path / "small.mp4"
    path.write_bytes(os.urandom(200 * 1024))
    ticket = client.create_upload_video(title="c", file_name="small.mp4")
    real = upload_module._FileCrc.value
    monkeypatch.setattr(upload_module._FileCrc, "value", lambda self: real(self) ^ 1)
    with pytest.raises(CloudError) as caught:
        upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "ck",
                    policy=RetryPolicy(attempts=2, seed=1), sleep=lambda s: None)
    assert caught.value.code == "InconsistentError"
    assert puts(emulator) == 2  # uploaded once more before giving up


def test_whole_object_crc_matches_the_local_file(emulator, client, tmp_path, big_file):
    path, crc = big_file
    ticket = client.create_upload_video(title="c", file_name="big.mp4")
    result = upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "ck", part_size=PART)
    assert result.crc64 == crc == stored(emulator, ticket)["crc64"]


# ---------------------------------------------------------------- damage in transit


def _stored_bytes(emulator, ticket: UploadTicket) -> bytes:
    _, reader = emulator.oss.open(ticket.address.bucket, ticket.address.key)
    with reader:
        return b"".join(reader.chunks())


def test_a_part_damaged_in_transit_is_caught_and_the_upload_sent_again(emulator, client, tmp_path, big_file):
    path, crc = big_file
    ticket = client.create_upload_video(title="b", file_name="big.mp4")
    # One bit of one part flipped on its way in: OSS stores and checksums what it received.
    emulator.set_faults([{"match": "oss:PUT", "error": "corrupt", "count": 1}])
    slept: list[float] = []
    result = upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "ck", part_size=PART, threads=4,
                         policy=RetryPolicy(seed=1), sleep=slept.append)
    assert result.crc64 == crc == stored(emulator, ticket)["crc64"]
    assert _stored_bytes(emulator, ticket) == path.read_bytes()
    assert puts(emulator) == 10 and len(slept) == 1  # the whole object again: the damaged part is not known


def test_a_small_file_damaged_in_transit_is_put_again(emulator, client, tmp_path):
    data, path, ticket = small_upload(client, tmp_path)
    emulator.set_faults([{"match": "oss:PUT", "error": "corrupt", "count": 1}])
    result = upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "ck",
                         policy=RetryPolicy(seed=1), sleep=lambda s: None)
    assert result.crc64 == _crc64(data) and _stored_bytes(emulator, ticket) == data
    assert puts(emulator) == 2


def test_damage_on_every_attempt_fails_the_upload_instead_of_claiming_it(emulator, client, tmp_path):
    data, path, ticket = small_upload(client, tmp_path)
    emulator.set_faults([{"match": "oss:PUT", "error": "corrupt", "rate": 1.0}])
    with pytest.raises(CloudError) as caught:
        upload_file(ticket, path, refresh=None, checkpoint_dir=tmp_path / "ck",
                    policy=RetryPolicy(attempts=3, seed=1), sleep=lambda s: None)
    assert caught.value.code == "InconsistentError" and caught.value.retryable
    assert stored(emulator, ticket)["crc64"] != _crc64(data)  # what OSS holds is damaged, and we said so
