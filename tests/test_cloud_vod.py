"""VodClient against the emulator over HTTP: every call, retries, ambiguous creates, secrecy.

Retries never really wait (`sleep` is a recorder); time moves only through the
emulator's control plane.
"""

from __future__ import annotations

import socket

import oss2
import pytest
from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION

from vodsync.cloud.retry import RetryPolicy
from vodsync.cloud.settings import CloudSettings
from vodsync.cloud.types import RegisterEntry, UrlUploadEntry
from vodsync.cloud.vod import VodClient
from vodsync.errors import CloudError


def make_client(emulator, *, secret: str = ACCESS_KEY_SECRET, attempts: int = 6, read_timeout: float = 10, **kw):
    slept: list[float] = []
    observed: list[tuple[str, str | None]] = []
    client = VodClient(
        CloudSettings(ACCESS_KEY_ID, secret, region=REGION, endpoint=emulator.url, read_timeout=read_timeout),
        policy=RetryPolicy(attempts=attempts, seed=1),
        sleep=slept.append,
        observer=lambda action, code: observed.append((action, code)),
        **kw,
    )
    client.slept = slept  # type: ignore[attr-defined]
    client.observed = observed  # type: ignore[attr-defined]
    return client


@pytest.fixture
def client(emulator):
    return make_client(emulator)


# ---------------------------------------------------------------- settings and wiring


def test_settings_repr_hides_secrets():
    s = CloudSettings("AKID", "the-secret", security_token="the-token")
    assert "the-secret" not in repr(s) and "the-token" not in repr(s)
    assert "AKID" in repr(s)
    with pytest.raises(ValueError):
        CloudSettings("a", "b", endpoint="127.0.0.1:9090")


def test_loopback_endpoint_ignores_proxy_variables(emulator, client, monkeypatch):
    # A proxy that refuses everything: the SDK would use it unless told not to.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    fresh = make_client(emulator)
    assert fresh.get_video_infos(["0" * 32]) == ({}, ["0" * 32])


# ---------------------------------------------------------------- uploads: tickets


def test_create_upload_video_decodes_the_ticket(emulator, client):
    ticket = client.create_upload_video(
        title="intro", file_name="intro.mp4", file_size=1234, description="d", tags=("a", "b"),
        cate_id=7, reference_id="ref-intro-1", user_data={"Extend": {"k": "v"}},
    )
    assert len(ticket.media_id) == 32
    assert ticket.address.endpoint == emulator.endpoint
    assert ticket.address.bucket and ticket.address.key.endswith(".mp4")
    cred = ticket.credential
    assert cred.access_key_id and cred.access_key_secret and cred.security_token
    assert cred.deadline == pytest.approx(emulator.state()["now"] + emulator.sts_ttl, abs=5)
    for secret in (cred.access_key_id, cred.access_key_secret, cred.security_token):
        assert secret not in repr(ticket) and secret not in str(cred)

    found, missing = client.get_video_infos([ticket.media_id, "f" * 32])
    video = found[ticket.media_id]
    assert (video.kind, video.title, video.description, video.tags, video.cate_id, video.reference_id) == (
        "video", "intro", "d", ("a", "b"), 7, "ref-intro-1")
    assert video.status == "Uploading"
    assert missing == ["f" * 32]
    assert client.observed[0] == ("CreateUploadVideo", None)


def test_refresh_upload_video_keeps_address_and_renews_credential(emulator, client):
    first = client.create_upload_video(title="t", file_name="t.mp4", reference_id="ref-refresh")
    emulator.advance(100)
    again = client.refresh_upload_video(video_id=first.media_id)
    by_ref = client.refresh_upload_video(reference_id="ref-refresh")
    assert again.media_id == by_ref.media_id == first.media_id
    assert again.address == first.address
    assert again.credential.security_token != first.credential.security_token
    assert again.credential.deadline > first.credential.deadline
    with pytest.raises(ValueError):
        client.refresh_upload_video()


def test_create_upload_image_and_attached_media(emulator, client):
    image = client.create_upload_image(image_type="cover", image_ext="png", title="poster", tags=("x",))
    info = client.get_image_info(image.media_id)
    assert info is not None and (info.kind, info.title, info.tags) == ("image", "poster", ("x",))
    assert image.address.key.endswith(".png")
    assert client.get_image_info("0" * 32) is None  # NoSuchResource -> None

    att = client.create_upload_attached_media(business_type="subtitle", media_ext="srt", title="subs", file_size=10)
    found, missing = client.get_attached_media_infos([att.media_id, "e" * 32])
    assert found[att.media_id].kind == "attached" and found[att.media_id].title == "subs"
    assert missing == ["e" * 32]


# ---------------------------------------------------------------- URL jobs and registration


def test_upload_media_by_url_and_job_infos(emulator, client):
    entries = [
        UrlUploadEntry(url="http://media.example.com/a,b c.mp4", title="comma and space", tags=("t",)),
        UrlUploadEntry(url="http://media.example.com/clip?x=1&y=2", title="query", file_extension="mp4"),
    ]
    jobs = client.upload_media_by_url(entries)
    assert set(jobs) == {e.url for e in entries}
    found, non_exists = client.get_url_upload_infos([*jobs.values(), "nojob"])
    assert {j.job_id for j in found} == set(jobs.values())
    assert {j.url for j in found} == {e.url for e in entries}  # the emulator decoded our encoding
    assert non_exists == ["nojob"]
    for job in found:
        assert job.status
        assert job.terminal == (job.status in {"SUCCESS", "DOWNLOAD_FAIL", "UPLOAD_FAIL"})
    assert all(j.creation_time for j in found)
    by_url, none = client.get_url_upload_infos_by_urls([entries[0].url, "http://media.example.com/never.mp4"])
    assert [(j.url, j.job_id) for j in by_url] == [(entries[0].url, jobs[entries[0].url])]
    assert none == ["http://media.example.com/never.mp4"]
    canceled, missing = client.cancel_url_upload_jobs(["nojob"])
    assert canceled == [] and missing == ["nojob"]


def test_batch_limits_are_checked_before_calling(client):
    with pytest.raises(ValueError):
        client.upload_media_by_url([UrlUploadEntry(url=f"http://x/{i}.mp4", title="t") for i in range(21)])
    with pytest.raises(ValueError):
        client.get_url_upload_infos([str(i) for i in range(11)])
    with pytest.raises(ValueError):
        client.delete_videos([str(i) for i in range(21)])
    with pytest.raises(ValueError):
        client.register_media([RegisterEntry(file_url=f"http://x/{i}.mp4", title="t") for i in range(11)])
    with pytest.raises(TypeError):
        client.get_video_infos("abc")
    assert client.calls == {}
    assert client.get_video_infos([]) == ({}, [])


def test_register_media_is_idempotent(emulator, client):
    emulator.oss.ensure_bucket("customer-media")
    account = oss2.Bucket(oss2.Auth(ACCESS_KEY_ID, ACCESS_KEY_SECRET), emulator.endpoint, "customer-media")
    account.put_object("films/a.mp4", b"x" * 100)
    url = f"{emulator.endpoint}/customer-media/films/a.mp4"
    missing_url = f"{emulator.endpoint}/customer-media/films/none.mp4"
    registered, failed = client.register_media([RegisterEntry(file_url=url, title="A"),
                                                RegisterEntry(file_url=missing_url, title="B")])
    assert [(r.file_url, r.new_register) for r in registered] == [(url, True)]
    assert failed == [missing_url]
    again, _ = client.register_media([RegisterEntry(file_url=url, title="A")])
    assert again[0].media_id == registered[0].media_id and again[0].new_register is False


# ---------------------------------------------------------------- updates, deletes, search


def test_update_delete_and_search(emulator, client):
    ticket = client.create_upload_video(title="before", file_name="u.mp4", tags=("old",), reference_id="ref-upd")
    client.update_video_info(ticket.media_id, {"title": "after", "tags": ["n1", "n2"], "description": "hello"})
    video = client.get_videos_by_reference_ids(["ref-upd", "ref-none"])
    assert video[0]["ref-upd"].title == "after"
    assert video[0]["ref-upd"].tags == ("n1", "n2") and video[0]["ref-upd"].description == "hello"
    assert video[1] == ["ref-none"]
    with pytest.raises(ValueError):
        client.update_video_info(ticket.media_id, {"colour": "red"})

    image = client.create_upload_image(image_type="default", image_ext="jpg", title="img")
    assert client.update_image_infos([(image.media_id, {"title": "img2"}), ("0" * 32, {"title": "x"})]) == ["0" * 32]
    assert client.get_image_info(image.media_id).title == "img2"

    att = client.create_upload_attached_media(business_type="watermark", media_ext="png", title="wm")
    assert client.update_attached_media_infos([(att.media_id, {"title": "wm2"})]) == []
    assert client.get_attached_media_infos([att.media_id])[0][att.media_id].title == "wm2"

    items = list(client.search_media("video", "Title = 'after'", fields=("Title",), page_size=1))
    assert [i.media_id for i in items if i.title == "after"] == [ticket.media_id]

    assert client.delete_videos([ticket.media_id, "d" * 32]) == ["d" * 32]
    assert client.get_video_infos([ticket.media_id]) == ({}, [ticket.media_id])
    client.delete_images([image.media_id])
    assert client.get_image_info(image.media_id) is None
    assert client.delete_attached_media([att.media_id, "c" * 32]) == ["c" * 32]


def test_search_pages_through_everything(emulator, client):
    ids = {client.create_upload_video(title=f"v{i}", file_name=f"v{i}.mp4").media_id for i in range(5)}
    seen = [hit.media_id for hit in client.search_media("video", "Status in ('Uploading')", page_size=2)]
    assert set(seen) == ids and len(seen) == 5
    assert client.calls["SearchMedia"] == 3


# ---------------------------------------------------------------- retries and errors


def test_throttling_is_retried_then_succeeds(emulator, client):
    emulator.set_faults([{"match": "CreateUploadVideo", "error": "Throttling.User", "count": 2}])
    ticket = client.create_upload_video(title="t", file_name="t.mp4")
    assert ticket.media_id
    assert client.calls["CreateUploadVideo"] == 3
    assert emulator.calls()["CreateUploadVideo"] == 3
    assert len(client.slept) == 2 and client.slept[1] > client.slept[0] * 0.5
    assert [c for a, c in client.observed if a == "CreateUploadVideo"] == ["Throttling.User", "Throttling.User", None]


def test_5xx_is_retried_until_the_budget_runs_out(emulator):
    client = make_client(emulator, attempts=3)
    emulator.set_faults([{"match": "GetVideoInfos", "error": "ServiceUnavailable"}])
    with pytest.raises(CloudError) as caught:
        client.get_video_infos(["x"])
    assert caught.value.code == "ServiceUnavailable" and caught.value.status == 503 and caught.value.retryable
    assert client.calls["GetVideoInfos"] == 3 and len(client.slept) == 2


def test_permanent_error_fails_at_once(emulator, client):
    with pytest.raises(CloudError) as caught:
        client.refresh_upload_video(video_id="0" * 32)
    err = caught.value
    assert (err.code, err.status, err.retryable) == ("InvalidVideo.NotFound", 404, False)
    assert err.request_id
    assert client.calls["RefreshUploadVideo"] == 1 and client.slept == []

    with pytest.raises(CloudError) as caught:
        client.create_upload_video(title="t", file_name="no-extension")
    assert caught.value.retryable is False and client.calls["CreateUploadVideo"] == 1


def test_wrong_secret_is_permanent_and_never_shown(emulator):
    secret = "wrong-secret-value-123"
    client = make_client(emulator, secret=secret)
    with pytest.raises(CloudError) as caught:
        client.get_video_infos(["x"])
    assert caught.value.retryable is False
    assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert secret not in repr(client)


def test_sts_settings_token_never_in_errors(emulator):
    token = "CAIS-very-secret-token-value"
    client = VodClient(
        CloudSettings("STS.someone", "sts-secret-xyz", security_token=token, endpoint=emulator.url),
        policy=RetryPolicy(attempts=1), sleep=lambda s: None,
    )
    with pytest.raises(CloudError) as caught:
        client.get_video_infos(["x"])
    text = str(caught.value) + repr(caught.value) + caught.value.api_message
    assert token not in text and "sts-secret-xyz" not in text
    assert len(caught.value.api_message) <= 300


def test_network_error_before_sending_is_retried_even_for_creates():
    # Nothing listens: the connection never opens, so the create certainly did not happen.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []
    client = VodClient(CloudSettings("a", "b", endpoint=f"http://127.0.0.1:{port}", connect_timeout=1),
                       policy=RetryPolicy(attempts=3, seed=0), sleep=slept.append)
    with pytest.raises(CloudError) as caught:
        client.create_upload_image(image_type="cover", image_ext="png")
    assert caught.value.code == "SDK.HttpError" and caught.value.retryable
    assert caught.value.ambiguous is False
    assert client.calls["CreateUploadImage"] == 3 and len(slept) == 2
    assert "connection refused" in str(caught.value)


# ---------------------------------------------------------------- ambiguous creates


def test_reset_on_create_upload_image_is_ambiguous(emulator, client):
    emulator.set_faults([{"match": "CreateUploadImage", "error": "reset", "count": 1}])
    with pytest.raises(CloudError) as caught:
        client.create_upload_image(image_type="cover", image_ext="png")
    err = caught.value
    assert err.ambiguous is True and err.retryable is False and err.code == "SDK.HttpError"
    assert client.calls["CreateUploadImage"] == 1  # not blindly repeated


@pytest.mark.parametrize("action", ["CreateUploadAttachedMedia", "UploadMediaByURL", "CreateUploadVideo"])
def test_reset_on_other_creates_without_reference_is_ambiguous(emulator, client, action):
    emulator.set_faults([{"match": action, "error": "reset", "count": 1}])
    with pytest.raises(CloudError) as caught:
        if action == "CreateUploadAttachedMedia":
            client.create_upload_attached_media(business_type="watermark", media_ext="png", title="w")
        elif action == "UploadMediaByURL":
            client.upload_media_by_url([UrlUploadEntry(url="http://x.example/a.mp4", title="a")])
        else:
            client.create_upload_video(title="t", file_name="t.mp4")
    assert caught.value.ambiguous is True and client.calls[action] == 1


def test_reset_on_create_upload_video_with_reference_recovers_without_duplicate(emulator, client):
    emulator.set_faults([{"match": "CreateUploadVideo", "error": "reset", "count": 1}])
    ticket = client.create_upload_video(title="t", file_name="t.mp4", reference_id="ref-reset-1")
    assert ticket.media_id
    found, _ = client.get_videos_by_reference_ids(["ref-reset-1"])
    assert found["ref-reset-1"].media_id == ticket.media_id
    assert len(emulator.state()["videos"]) == 1  # exactly one video
    assert client.calls["GetVideoInfos"] >= 1  # it looked before repeating


def test_create_that_landed_after_a_read_timeout_is_recovered_by_reference(emulator):
    # The create is served 1.5 s later (after our 1 s read timeout) and *does* happen;
    # the lookup by ReferenceId is itself served late enough to see it, so the client
    # hands back a RefreshUploadVideo ticket for that video instead of creating another.
    client = make_client(emulator, read_timeout=1)
    emulator.set_faults([
        {"match": "CreateUploadVideo", "error": "slow", "delay_ms": 1500, "count": 1},
        {"match": "GetVideoInfos", "error": "slow", "delay_ms": 800, "count": 1},
    ])
    ticket = client.create_upload_video(title="t", file_name="t.mp4", reference_id="ref-late-1")
    assert client.calls["CreateUploadVideo"] == 1
    assert client.calls["RefreshUploadVideo"] == 1
    found, _ = client.get_videos_by_reference_ids(["ref-late-1"])
    assert found["ref-late-1"].media_id == ticket.media_id
    assert len(emulator.state()["videos"]) == 1


def test_duplicate_reference_on_first_attempt_is_a_permanent_error(emulator, client):
    client.create_upload_video(title="t", file_name="t.mp4", reference_id="ref-dup-1")
    with pytest.raises(CloudError) as caught:
        client.create_upload_video(title="t", file_name="t.mp4", reference_id="ref-dup-1")
    assert caught.value.code == "InvalidParameter.ReferenceId" and not caught.value.retryable


def test_giving_up_on_a_create_with_reference_after_resets_is_ambiguous(emulator):
    client = make_client(emulator, attempts=3)
    emulator.set_faults([{"match": "CreateUploadVideo", "error": "reset"}])
    with pytest.raises(CloudError) as caught:
        client.create_upload_video(title="t", file_name="t.mp4", reference_id="ref-gone-1")
    assert caught.value.ambiguous is True and caught.value.retryable is False
    # each lost attempt was checked by ReferenceId before the next one was sent
    assert client.calls["CreateUploadVideo"] == 3 and client.calls["GetVideoInfos"] == 3
    assert emulator.state()["videos"] == []
