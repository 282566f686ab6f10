"""Logging: one line per event, JSON or text, and secrets scrubbed from every part of a record."""

from __future__ import annotations

import io
import json
import logging

import pytest

from vodsync.logs import (
    SecretRedactingFilter,
    forget_secrets,
    redact,
    register_secret,
    setup_logging,
)

SECRET = "s3cr3t-AKSECRET-value-9f8e7d"


@pytest.fixture(autouse=True)
def clean_logging():
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    yield
    forget_secrets()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[1]:
        root.addHandler(h)
    root.setLevel(saved[0])


def run(fmt: str) -> str:
    stream = io.StringIO()
    setup_logging("debug", fmt, stream)  # type: ignore[arg-type]
    register_secret(SECRET)
    log = logging.getLogger("vodsync.test")
    log.info("calling with key %s", SECRET, extra={"detail": {"token": SECRET}, "n": 3})
    return stream.getvalue()


def test_json_scrubs_registered_secret() -> None:
    out = run("json")
    assert SECRET not in out
    lines = out.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["msg"] == "calling with key ***"
    assert event["level"] == "info" and event["logger"] == "vodsync.test"
    assert event["detail"] == {"token": "***"} and event["n"] == 3
    assert event["ts"].endswith("Z")


def test_text_scrubs_registered_secret() -> None:
    out = run("text")
    assert SECRET not in out
    assert "calling with key ***" in out
    assert out.count("\n") == 1


def test_auto_is_json_when_not_a_terminal() -> None:
    out = run("auto")
    json.loads(out)


@pytest.mark.parametrize(
    "text",
    [
        "{'AccessKeySecret': 'abcdEFGH1234', 'AccessKeyId': 'LTAIxx'}",
        '{"SecurityToken":"CAIS+abc/def==","x":1}',
        "GET /?Signature=AbC%2Bdef&SignatureMethod=HMAC-SHA1",
        "url?x-oss-security-token=CAIStoken&Expires=1",
        "Authorization: OSS LTAIabc:SiGnAtUrE=",
        "UploadAuth=eyJTZWN1cml0eVRva2VuIjoiQ0FJUyJ9",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET=abcdEFGH1234",
    ],
)
def test_known_keys_are_scrubbed(text: str) -> None:
    out = redact(text)
    for secret in ("abcdEFGH1234", "CAIS+abc/def==", "AbC%2Bdef", "CAIStoken", "SiGnAtUrE", "eyJTZWN1"):
        assert secret not in out
    assert "***" in out


def test_harmless_neighbours_survive() -> None:
    out = redact("GET /?Signature=AbC&SignatureMethod=HMAC-SHA1&AccessKeyId=LTAI5")
    assert "SignatureMethod=HMAC-SHA1" in out and "AccessKeyId=LTAI5" in out


def test_traceback_and_extra_keys_are_scrubbed() -> None:
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    register_secret(SECRET)
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        logging.getLogger("vodsync.test").exception("failed", extra={"UploadAuth": "whatever-value"})
    out = stream.getvalue()
    assert SECRET not in out and "whatever-value" not in out
    event = json.loads(out)
    assert "RuntimeError: boom ***" in event["exc"]
    assert event["UploadAuth"] == "***"


def test_filter_also_guards_a_handler_it_is_attached_to() -> None:
    register_secret(SECRET)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s and %r", (SECRET, {"k": SECRET}), None)
    assert SecretRedactingFilter().filter(record)
    assert SECRET not in record.getMessage()


def test_short_strings_are_not_registered() -> None:
    register_secret("ab")
    register_secret("")
    register_secret(None)
    assert redact("about a bad tab") == "about a bad tab"


def test_text_is_one_line_even_with_newlines() -> None:
    stream = io.StringIO()
    setup_logging("info", "text", stream)
    logging.getLogger("vodsync.test").warning("line one\nline two: forged", extra={"path": "a\nb"})
    assert stream.getvalue().count("\n") == 1
    assert "line one\\nline two" in stream.getvalue()


def test_setup_replaces_its_own_handler() -> None:
    setup_logging("info", "json", io.StringIO())
    setup_logging("info", "json", io.StringIO())
    assert sum(h.get_name() == "vodsync" for h in logging.getLogger().handlers) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        setup_logging("info", "xml", io.StringIO())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        setup_logging("loud", "json", io.StringIO())


def test_the_configured_secret_is_registered_by_the_client_that_uses_it() -> None:
    # Registration is not left to callers: making a VodClient registers the account's secrets.
    from vodsync.cloud.settings import CloudSettings
    from vodsync.cloud.vod import VodClient

    stream = io.StringIO()
    setup_logging("debug", "text", stream)  # type: ignore[arg-type]
    VodClient(CloudSettings("AKID-test", SECRET, security_token="sts-" + SECRET[::-1]))
    logging.getLogger("vodsync.test").info("oops: %s and %s", SECRET, "sts-" + SECRET[::-1])
    out = stream.getvalue()
    assert SECRET not in out and SECRET[::-1] not in out and "oops: *** and ***" in out
