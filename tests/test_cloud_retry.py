"""RetryPolicy, the retry loop, the transient-code table and message scrubbing (pure, no I/O)."""

from __future__ import annotations

import logging

import pytest

from vodsync.cloud.retry import (
    MAX_MESSAGE,
    RetryPolicy,
    call_with_retry,
    install_sdk_log_scrubber,
    is_retryable_code,
    scrub,
)
from vodsync.errors import CloudError


def test_delays_are_finite_and_the_budget():
    assert len(list(RetryPolicy(attempts=6).delays())) == 5
    assert list(RetryPolicy(attempts=1).delays()) == []


def test_delays_grow_with_jitter_and_respect_cap():
    delays = list(RetryPolicy(attempts=8, base=0.2, cap=1.0, seed=7).delays())
    for n, d in enumerate(delays):
        step = min(1.0, 0.2 * 2**n)
        assert step / 2 <= d <= step  # equal jitter: half fixed, half random
    assert max(delays) <= 1.0


def test_seed_makes_delays_reproducible():
    a = list(RetryPolicy(seed=1).delays())
    assert a == list(RetryPolicy(seed=1).delays())
    assert a != list(RetryPolicy(seed=2).delays())


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("Throttling", 400, True),
        ("Throttling.User", 400, True),
        ("Throttling.Api", 400, True),
        ("ServiceUnavailable", 503, True),
        ("ServiceUnAvailable", 503, True),
        ("InternalError", 500, True),
        ("SignatureNonceUsed", 400, True),
        ("SDK.HttpError", None, True),
        ("AddVideoFailed", 503, True),  # any 5xx
        ("InvalidParameter", 400, False),
        ("Forbidden.RAM", 403, False),
        ("SignatureDoesNotMatch", 400, False),
        ("InvalidVideo.NotFound", 404, False),
    ],
)
def test_retryable_table(code, status, expected):
    assert is_retryable_code(code, status) is expected


def test_call_with_retry_retries_until_success():
    slept: list[float] = []
    outcomes = [CloudError("Throttling", "slow", retryable=True)] * 2 + ["ok"]

    def fn():
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    assert call_with_retry(fn, delays=[0.1, 0.2, 0.3], sleep=slept.append) == "ok"
    assert slept == [0.1, 0.2]


def test_call_with_retry_stops_at_permanent_error_and_when_budget_runs_out():
    calls = []

    def permanent():
        calls.append(1)
        raise CloudError("InvalidParameter", "bad", retryable=False)

    with pytest.raises(CloudError, match="InvalidParameter"):
        call_with_retry(permanent, delays=[1, 1], sleep=lambda s: None)
    assert len(calls) == 1

    def transient():
        calls.append(1)
        raise CloudError("Throttling", "slow", retryable=True)

    calls.clear()
    with pytest.raises(CloudError, match="Throttling"):
        call_with_retry(transient, delays=RetryPolicy(attempts=4, seed=0).delays(), sleep=lambda s: None)
    assert len(calls) == 4


def test_scrub_removes_secrets_and_truncates():
    secret = "MySuperSecretValue"
    text = (
        f"boom secret={secret} SecurityToken=CAISabc&x=1 Signature=abc%3D "
        "server string to sign is: POST&%2F&AccessKeyId%3Dak%26SecurityToken%3Dtok"
    )
    out = scrub(text, [secret])
    assert secret not in out
    assert "CAISabc" not in out
    assert "tok" not in out.split("string to sign")[-1]
    assert "Signature=***" in out
    assert len(scrub("x" * 1000)) <= MAX_MESSAGE
    assert "A" * 80 not in scrub("token " + "A" * 80)  # long opaque tokens go too


def test_scrub_headers_dict_form():
    out = scrub("{'x-oss-security-token': 'CAIStoken', 'authorization': 'OSS ak:sig'}")
    assert "CAIStoken" not in out


def test_sdk_log_scrubber_rewrites_records(caplog):
    install_sdk_log_scrubber()
    install_sdk_log_scrubber()  # idempotent
    with caplog.at_level(logging.DEBUG, logger="aliyunsdkcore.client"):
        logging.getLogger("aliyunsdkcore.client").error("url /?SecurityToken=%s&x=1", "CAISsecret")
    assert "CAISsecret" not in caplog.text
    assert "SecurityToken=***" in caplog.text


def test_part_listing_retries_through_the_one_loop_with_the_injected_sleep(monkeypatch):
    # ListParts of a resumed upload is retried on its own; its waits go to the uploader's sleep.
    import oss2
    from oss2 import exceptions as oss_errors

    from vodsync.cloud.upload import RETRY_LIST_PARTS, _Bucket

    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(args)
        if len(calls) < 3:
            raise oss_errors.ServerError(503, {}, b"", {"Code": "ServiceUnavailable"})
        return "listed"

    monkeypatch.setattr(oss2.Bucket, "list_parts", flaky)
    slept: list[float] = []
    bucket = _Bucket(oss2.AnonymousAuth(), "http://127.0.0.1:9", "bucket-1", sleep=slept.append)
    assert bucket.list_parts("key", "upload-1") == "listed"
    assert slept == list(RETRY_LIST_PARTS[:2]) and len(calls) == 3


def test_ambiguous_is_a_declared_field_of_every_cloud_error():
    from vodsync.errors import CloudError, CredentialExpired

    assert CloudError("Throttling", "slow down").ambiguous is False
    assert CloudError("SDK.HttpError", "reset", retryable=True, ambiguous=True).ambiguous is True
    assert CredentialExpired("SecurityTokenExpired", "expired").ambiguous is False
