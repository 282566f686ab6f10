"""The emulated OSS, driven by the real oss2 over HTTP (and OssStore directly where that is the point)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path

import oss2
import pytest

from vodsync.emulator.clock import Clock
from vodsync.emulator.oss import OssStore, crc64_combine, new_crc64

MiB = 1 << 20


def _crc64(data: bytes) -> int:
    crc = new_crc64()
    crc.update(data)
    return crc.crcValue


def _write_random_file(path: Path, size: int) -> tuple[str, int]:
    """Write `size` random bytes; return (md5 hex, crc64)."""
    md5, crc = hashlib.md5(), new_crc64()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(8 * MiB, left))
            md5.update(chunk)
            crc.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return md5.hexdigest(), crc.crcValue


def _oss_puts(emulator) -> int:
    return emulator.calls().get("oss:PUT", 0)


# ---------------------------------------------------------------------- single objects


@pytest.mark.parametrize("key", ["plain.mp4", "dir/sub dir/ünïcode + plus?.mp4"])
def test_put_get_head_delete_with_etag_and_crc(account_bucket, key):
    data = os.urandom(300_000)
    put = account_bucket.put_object(key, data)  # oss2 checks the CRC header itself (enable_crc)
    assert put.etag == hashlib.md5(data).hexdigest().upper()
    assert put.crc == _crc64(data)

    head = account_bucket.head_object(key)
    assert head.content_length == len(data)
    assert head.etag == put.etag
    assert head.server_crc == put.crc

    assert account_bucket.get_object(key).read() == data
    assert account_bucket.get_object(key, byte_range=(10, 19)).read() == data[10:20]

    account_bucket.delete_object(key)
    with pytest.raises(oss2.exceptions.NotFound):
        account_bucket.head_object(key)
    with pytest.raises(oss2.exceptions.NoSuchKey):
        account_bucket.get_object(key)


def test_content_md5_mismatch_is_invalid_digest(account_bucket):
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    with pytest.raises(oss2.exceptions.InvalidDigest) as exc:
        account_bucket.put_object("a.mp4", b"payload", headers={"Content-MD5": wrong})
    assert exc.value.status == 400
    assert not account_bucket.object_exists("a.mp4")
    right = base64.b64encode(hashlib.md5(b"payload").digest()).decode()
    account_bucket.put_object("a.mp4", b"payload", headers={"Content-MD5": right})


def test_put_to_a_missing_bucket_is_no_such_bucket(emulator):
    bucket = oss2.Bucket(oss2.Auth("emulator", "emulator-secret"), emulator.url, "never-created")
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        bucket.put_object("a.mp4", b"x")


def test_account_key_creates_buckets_and_lists_objects(emulator, account_bucket):
    other = oss2.Bucket(oss2.Auth("emulator", "emulator-secret"), emulator.url, "another-bucket")
    other.create_bucket()
    other.put_object("in/other.mp4", b"1")
    for key in ("a/1.mp4", "a/2.mp4", "b/3.mp4"):
        account_bucket.put_object(key, b"x")
    assert [o.key for o in oss2.ObjectIterator(account_bucket, prefix="a/", max_keys=1)] == ["a/1.mp4", "a/2.mp4"]
    listed = list(oss2.ObjectIterator(account_bucket, delimiter="/"))
    assert [o.key for o in listed] == ["a/", "b/"]
    assert {(o["bucket"], o["key"]) for o in emulator.state()["objects"]} == {
        ("another-bucket", "in/other.mp4"), ("test-bucket", "a/1.mp4"), ("test-bucket", "a/2.mp4"),
        ("test-bucket", "b/3.mp4"),
    }


# ---------------------------------------------------------------------- credentials


def test_sts_token_is_scoped_to_its_bucket_and_key(emulator, account_bucket, sts_bucket):
    scoped = sts_bucket("test-bucket", "sv/mine.mp4")
    scoped.put_object("sv/mine.mp4", b"ok")
    with pytest.raises(oss2.exceptions.ServerError) as other_key:
        scoped.put_object("sv/someone-elses.mp4", b"no")
    assert (other_key.value.status, other_key.value.code) == (403, "AccessDenied")

    emulator.oss.ensure_bucket("other-bucket")
    wrong_bucket = sts_bucket("test-bucket", "k.mp4")
    wrong_bucket.bucket_name = "other-bucket"
    with pytest.raises(oss2.exceptions.ServerError) as other_bucket:
        wrong_bucket.put_object("k.mp4", b"no")
    assert (other_bucket.value.status, other_bucket.value.code) == (403, "AccessDenied")

    with pytest.raises(oss2.exceptions.ServerError) as listing:
        list(oss2.ObjectIterator(scoped))
    assert listing.value.status == 403


def _refusal(call) -> tuple[int, str]:
    """(status, code) of the OSS error `call()` raises."""
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        call()
    return exc.value.status, exc.value.code


def test_unknown_key_and_wrong_secret(emulator, account_bucket):
    unknown = oss2.Bucket(oss2.Auth("nobody", "emulator-secret"), emulator.url, "test-bucket")
    assert _refusal(lambda: unknown.put_object("a.mp4", b"x")) == (403, "InvalidAccessKeyId")
    wrong = oss2.Bucket(oss2.Auth("emulator", "not-the-secret"), emulator.url, "test-bucket")
    assert _refusal(lambda: wrong.put_object("a.mp4", b"x")) == (403, "SignatureDoesNotMatch")
    # HEAD has no body: the code travels in x-oss-err, and oss2 still sees it.
    assert _refusal(lambda: wrong.head_object("a.mp4")) == (403, "SignatureDoesNotMatch")


def _sts(emulator, auth: dict, *, version: str = "v4", secret: str | None = None, region: str | None = None):
    """An oss2 bucket for a minted upload token, signed as asked (a wrong secret or region on request)."""
    return oss2.Bucket(
        oss2.StsAuth(auth["AccessKeyId"], secret or auth["AccessKeySecret"], auth["SecurityToken"],
                     auth_version=version),
        emulator.url, "test-bucket", region=region or auth["Region"],
    )


def test_upload_tokens_must_sign_v4(emulator, account_bucket):
    """A VOD storage bucket is a new bucket: OSS refuses V1 there (403, EC 0002-00000080,
    vod-api.md §00), with any upload token, even a valid one; V4 with the same token works."""
    auth = emulator.sts.mint("test-bucket", "sv/v.mp4")
    for request in (lambda b: b.put_object("sv/v.mp4", b"x"), lambda b: b.init_multipart_upload("sv/v.mp4"),
                    lambda b: b.head_object("sv/v.mp4")):
        with pytest.raises(oss2.exceptions.ServerError) as exc:
            request(_sts(emulator, auth, version="v1"))
        assert exc.value.status == 403
        assert exc.value.details.get("EC") == "0002-00000080"
    assert emulator.oss.head("test-bucket", "sv/v.mp4") is None
    _sts(emulator, auth).put_object("sv/v.mp4", b"signed v4")
    assert emulator.oss.head("test-bucket", "sv/v.mp4").size == len(b"signed v4")
    # The account key may still sign V1 (the seeding path) or V4.
    account_bucket.put_object("seed.mp4", b"v1")
    oss2.Bucket(oss2.AuthV4("emulator", "emulator-secret"), emulator.url, "test-bucket",
                region="cn-shanghai").put_object("seed4.mp4", b"v4")


def test_bad_v4_signature_is_refused(emulator, account_bucket):
    auth = emulator.sts.mint("test-bucket", "sv/v.mp4")
    wrong_secret = _sts(emulator, auth, secret="not-the-secret")
    assert _refusal(lambda: wrong_secret.put_object("sv/v.mp4", b"x")) == (403, "SignatureDoesNotMatch")
    assert _refusal(lambda: wrong_secret.head_object("sv/v.mp4")) == (403, "SignatureDoesNotMatch")
    # The signing key is derived from the region: a signature for another region does not match here.
    other_region = _sts(emulator, auth, region="cn-beijing")
    assert _refusal(lambda: other_region.put_object("sv/v.mp4", b"x")) == (403, "SignatureDoesNotMatch")
    assert emulator.oss.head("test-bucket", "sv/v.mp4") is None


def test_expired_token_is_security_token_expired(emulator, account_bucket, sts_bucket):
    bucket = sts_bucket("test-bucket", "v.mp4")
    emulator.advance(3001)
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        bucket.put_object("v.mp4", b"late")
    assert (exc.value.status, exc.value.code) == (403, "SecurityTokenExpired")
    assert exc.value.message == "The security token you provided has expired."
    assert exc.value.request_id


def test_resume_after_token_expiry_sends_only_missing_parts(emulator, account_bucket, sts_bucket, tmp_path):
    part_size = 256 * 1024
    parts = 8
    source = tmp_path / "movie.mp4"
    md5_hex, crc = _write_random_file(source, part_size * parts - 1000)
    store = oss2.ResumableStore(root=str(tmp_path / "checkpoints"))
    key = "sv/movie.mp4"

    def expire_after_three_parts(consumed: int, total: int | None) -> None:
        # Called before each part with the bytes finished so far (one thread: deterministic).
        if consumed >= 3 * part_size and emulator.clock.now() < expires_at:
            emulator.advance(3001)

    first = sts_bucket("test-bucket", key)
    expires_at = emulator.clock.now() + 3000
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        oss2.resumable_upload(first, key, str(source), store=store, multipart_threshold=part_size,
                              part_size=part_size, num_threads=1, progress_callback=expire_after_three_parts)
    assert (exc.value.status, exc.value.code) == (403, "SecurityTokenExpired")
    [upload] = emulator.state()["multipart_uploads"]
    assert upload["parts"] == 3

    puts_before = _oss_puts(emulator)
    fresh = sts_bucket("test-bucket", key)  # new credentials, same checkpoint store
    oss2.resumable_upload(fresh, key, str(source), store=store, multipart_threshold=part_size,
                          part_size=part_size, num_threads=2)
    assert _oss_puts(emulator) - puts_before == parts - 3
    head = account_bucket.head_object(key)
    assert head.server_crc == crc
    assert head.etag.endswith(f"-{parts}")
    assert hashlib.md5(account_bucket.get_object(key).read()).hexdigest() == md5_hex
    assert emulator.state()["multipart_uploads"] == []


@pytest.mark.slow
def test_resumable_upload_of_100_mib_with_four_threads(emulator, account_bucket, sts_bucket, tmp_path):
    size = 100 * MiB + 12345
    source = tmp_path / "big.mp4"
    md5_hex, crc = _write_random_file(source, size)
    key = "sv/big.mp4"
    result = oss2.resumable_upload(sts_bucket("test-bucket", key), key, str(source),
                                   store=oss2.ResumableStore(root=str(tmp_path / "cp")),
                                   multipart_threshold=8 * MiB, part_size=8 * MiB, num_threads=4)
    assert result.crc == crc  # oss2 already compared it with the parts' combined CRC
    assert result.etag.endswith("-13")
    info = emulator.oss.head("test-bucket", key)
    assert (info.size, info.crc64) == (size, crc)
    md5 = hashlib.md5()
    _, stored = emulator.oss.open("test-bucket", key)  # GET's own CRC check is covered above
    with stored:
        for chunk in stored.chunks(8 * MiB):
            md5.update(chunk)
    assert md5.hexdigest() == md5_hex
    assert info.segments == (8 * MiB,) * 12 + (4 * MiB + 12345,)  # completed by renaming parts, no copy
    # Ranges across segment boundaries, through the real client.
    bucket = sts_bucket("test-bucket", key)
    with open(source, "rb") as f:
        for first, last in [(8 * MiB - 10, 8 * MiB + 9), (0, 16 * MiB), (size - 100, size - 1), (5, 5)]:
            f.seek(first)
            assert bucket.get_object(key, byte_range=(first, last)).read() == f.read(last - first + 1)


def test_crc64_etags_skip_the_md5_and_still_check_content_md5(tmp_path, _no_proxies):
    """`etags="crc64"` (benchmarks): ETags from the CRC-64 and size; parts, completion and
    oss2's own CRC checks work as before; a Content-MD5 is still checked, and then it is the ETag."""
    from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET

    from vodsync.emulator import Emulator

    with Emulator(access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, etags="crc64") as emu:
        bucket = oss2.Bucket(oss2.Auth(ACCESS_KEY_ID, ACCESS_KEY_SECRET), emu.url, "cheap")
        bucket.create_bucket()
        data = os.urandom(300_000)
        put = bucket.put_object("a.mp4", data)
        assert put.etag == f"{_crc64(data):016X}{len(data):016X}" != hashlib.md5(data).hexdigest().upper()

        source = tmp_path / "big.mp4"
        _, crc = _write_random_file(source, 3 * MiB + 7)
        result = oss2.resumable_upload(bucket, "big.mp4", str(source), store=oss2.ResumableStore(root=str(tmp_path)),
                                       multipart_threshold=MiB, part_size=MiB, num_threads=2)
        assert result.crc == crc and result.etag.endswith("-4")

        wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
        with pytest.raises(oss2.exceptions.InvalidDigest):
            bucket.put_object("b.mp4", b"payload", headers={"Content-MD5": wrong})
        right = base64.b64encode(hashlib.md5(b"payload").digest()).decode()
        assert bucket.put_object("b.mp4", b"payload", headers={"Content-MD5": right}).etag == \
            hashlib.md5(b"payload").hexdigest().upper()
    with pytest.raises(ValueError, match="etags must be one of md5, crc64"):
        Emulator(etags="sha1")


# ---------------------------------------------------------------------- multipart rules


def test_list_parts_pages_and_complete_validates_the_part_list(account_bucket):
    key = "parts.mp4"
    upload_id = account_bucket.init_multipart_upload(key).upload_id
    chunks = [os.urandom(100 * 1024) for _ in range(3)] + [b"tail"]
    etags = [account_bucket.upload_part(key, upload_id, n, c).etag for n, c in enumerate(chunks, 1)]

    first = account_bucket.list_parts(key, upload_id, max_parts=2)
    assert first.is_truncated and first.next_marker == "2"
    assert [p.part_number for p in first.parts] == [1, 2]
    rest = account_bucket.list_parts(key, upload_id, marker=first.next_marker, max_parts=2)
    assert not rest.is_truncated and [p.part_number for p in rest.parts] == [3, 4]
    assert [p.etag for p in first.parts + rest.parts] == etags

    PartInfo = oss2.models.PartInfo
    with pytest.raises(oss2.exceptions.ServerError) as bad_etag:
        account_bucket.complete_multipart_upload(key, upload_id, [PartInfo(1, "0" * 32)])
    assert bad_etag.value.code == "InvalidPart"
    # oss2 sorts the list itself; send an out-of-order document by hand.
    xml = "<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>\"{etags[n - 1]}\"</ETag></Part>" for n in (2, 1)
    ) + "</CompleteMultipartUpload>"
    with pytest.raises(oss2.exceptions.ServerError) as bad_order:
        account_bucket._do("POST", account_bucket.bucket_name, key, data=xml, params={"uploadId": upload_id})
    assert (bad_order.value.status, bad_order.value.code) == (400, "InvalidPartOrder")
    with pytest.raises(oss2.exceptions.ServerError) as too_small:
        account_bucket.complete_multipart_upload(key, upload_id, [PartInfo(4, etags[3]), PartInfo(5, etags[3])])
    assert too_small.value.code in ("InvalidPart", "EntityTooSmall")

    parts = [PartInfo(n, e, size=len(c), part_crc=_crc64(c)) for n, (e, c) in enumerate(zip(etags, chunks, strict=True), 1)]
    done = account_bucket.complete_multipart_upload(key, upload_id, parts)  # oss2 checks the combined CRC
    assert account_bucket.get_object(key).read() == b"".join(chunks)
    md5s = b"".join(hashlib.md5(c).digest() for c in chunks)
    assert done.etag == f"{hashlib.md5(md5s).hexdigest().upper()}-4"
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        account_bucket.list_parts(key, upload_id)


def test_list_multipart_uploads_finds_abandoned_uploads(account_bucket):
    ids = [account_bucket.init_multipart_upload(k).upload_id for k in ("x/1.mp4", "x/2.mp4", "y/3.mp4")]
    found = [(u.key, u.upload_id) for u in oss2.MultipartUploadIterator(account_bucket, max_uploads=2)]
    assert sorted(found) == sorted(zip(("x/1.mp4", "x/2.mp4", "y/3.mp4"), ids, strict=True))
    assert [u.key for u in oss2.MultipartUploadIterator(account_bucket, prefix="y/")] == ["y/3.mp4"]
    account_bucket.abort_multipart_upload("x/1.mp4", ids[0])
    assert {u.key for u in oss2.MultipartUploadIterator(account_bucket)} == {"x/2.mp4", "y/3.mp4"}


# ---------------------------------------------------------------------- OssStore in-process


def test_store_put_stream_notifies_listeners_and_snapshot_restores(tmp_path):
    store = OssStore(tmp_path / "oss", Clock())
    store.ensure_bucket("b")
    landed = []
    store.add_listener(lambda bucket, key, info: landed.append((bucket, key, info.size)))
    data = os.urandom(3 * MiB + 7)
    info = store.put_stream("b", "k/v.mp4", io.BytesIO(data), len(data))
    assert (info.size, info.crc64, info.etag) == (len(data), _crc64(data), hashlib.md5(data).hexdigest().upper())
    assert landed == [("b", "k/v.mp4", len(data))]
    upload = store.initiate_multipart("b", "open.mp4")
    store.upload_part(upload.upload_id, "b", "open.mp4", 1, io.BytesIO(b"abc"))
    done = store.initiate_multipart("b", "parts.mp4")
    pieces = [os.urandom(200 * 1024), os.urandom(150 * 1024), b"tail"]
    for n, piece in enumerate(pieces, 1):
        store.upload_part(done.upload_id, "b", "parts.mp4", n, io.BytesIO(piece))
    segmented = store.complete_multipart(done.upload_id, "b", "parts.mp4",
                                         [(p.number, p.etag) for p in store.list_parts(done.upload_id, "b", "parts.mp4")])
    assert segmented.segments == tuple(map(len, pieces)) and segmented.crc64 == _crc64(b"".join(pieces))

    again = OssStore(tmp_path / "oss", Clock())
    again.restore(store.snapshot())
    assert again.head("b", "k/v.mp4") == info and again.head("b", "parts.mp4") == segmented
    info2, f = again.open("b", "k/v.mp4")
    with f:
        assert b"".join(f.chunks()) == data
    _, reader = again.open("b", "parts.mp4")
    # Overwritten (by a plain object) and then deleted while a reader holds it: the reader keeps its bytes.
    again.put_stream("b", "parts.mp4", io.BytesIO(b"new"), 3)
    assert b"".join(again.open("b", "parts.mp4")[1].chunks()) == b"new"
    again.delete("b", "parts.mp4")
    with reader:
        assert b"".join(reader.chunks(1000)) == b"".join(pieces)
    assert [p.size for p in again.list_parts(upload.upload_id, "b", "open.mp4")] == [3]

    again.reset()
    assert again.head("b", "k/v.mp4") is None and again.list_uploads() == []
    assert again.has_bucket("b")


def test_crc64_combine_matches_a_crc_over_the_whole():
    a, b = os.urandom(1000), os.urandom(123_457)
    assert crc64_combine(_crc64(a), _crc64(b), len(b)) == _crc64(a + b)
    assert _crc64(b"123456789") == 0x995DC9BBDF1939FA  # the CRC-64/XZ check value
