"""Which cloud failures are worth another try, how long to wait, and what an error may say.

`RetryPolicy` is a value in the spirit of urllib3's `Retry`: a finite sequence of
jittered exponential delays. The sequence is also the budget: when it runs out
the last error is raised. Sleep is injected so tests never wait.

`is_retryable_code` is the one table of transient VOD/OSS error codes, and
`scrub` is the one place that makes an API or SDK message safe to show
(truncated, no tokens, secrets or signed strings).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from vodsync.errors import CloudError

T = TypeVar("T")
E = TypeVar("E", bound=Exception)

MAX_MESSAGE = 300

_RETRYABLE_CODES = frozenset(
    {"ServiceUnavailable", "ServiceUnAvailable", "InternalError", "SignatureNonceUsed", "SDK.HttpError"}
)


# The account's credentials themselves were refused (vod-api.md §1 "Common errors"; the SDK renames a
# SignatureDoesNotMatch to InvalidAccessKeySecret). No call can succeed with them: a run stops at the first.
# OSS answers InvalidAccessKeyId / SignatureDoesNotMatch (403) for an account key it does not know; with an
# STS credential from an UploadAuth the same codes mean "refresh it" (`cloud/upload.py`), not this.
IDENTITY_REJECTED_CODES = frozenset({
    "InvalidAccessKeyId.NotFound", "InvalidAccessKeyId.Inactive", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "InvalidAccessKeySecret",
})
# The key is valid but its RAM policy forbids the call: stops the run too, yet another call may be allowed.
PERMISSION_REJECTED_CODES = frozenset({"Forbidden.RAM"})


def is_credentials_rejected(code: str) -> bool:
    return code in IDENTITY_REJECTED_CODES or code in PERMISSION_REJECTED_CODES


def is_retryable_code(code: str, status: int | None = None) -> bool:
    """Throttling*, 5xx-style codes, a reused nonce and network errors are transient; the rest is not."""
    return code.startswith("Throttling") or code in _RETRYABLE_CODES or (status is not None and status >= 500)


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; before try n+1 wait about `base * 2**n` (capped), with jitter.

    Jitter is "equal jitter": half of each step is fixed, half random, so backoff
    always grows yet concurrent clients spread out. `seed` makes the delays
    reproducible (tests, benchmarks); None draws from system entropy.
    """

    attempts: int = 6
    base: float = 0.2
    cap: float = 10.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.cap < 0:
            raise ValueError("RetryPolicy needs attempts >= 1 and non-negative base/cap")

    def delays(self) -> Iterator[float]:
        """The waits between attempts: exactly `attempts - 1` of them."""
        rng = random.Random(self.seed)
        for n in range(self.attempts - 1):
            step = min(self.cap, self.base * (2**n))
            yield step / 2 + rng.uniform(0, step / 2)


def call_with_retry(
    fn: Callable[[], T],
    *,
    delays: Iterable[float],
    sleep: Callable[[float], object],
    retryable: Callable[[E], bool] = lambda e: e.retryable,  # type: ignore[attr-defined]
    errors: type[E] = CloudError,  # type: ignore[assignment]
) -> T:
    """The transport retry loop (VOD calls, OSS part listing): call `fn` until it returns, raises
    an `errors` that is not `retryable` (or anything else), or `delays` runs out."""
    pending = iter(delays)
    while True:
        try:
            return fn()
        except errors as exc:
            if not retryable(exc):
                raise
            delay = next(pending, None)
            if delay is None:
                raise
            sleep(delay)


# Things that must never reach a message: the signed string a SignatureDoesNotMatch
# echoes back, key=value pairs that carry credentials, and long opaque tokens
# (STS tokens and base64 UploadAuth blobs run to hundreds of characters).
_STRING_TO_SIGN = re.compile(r"(string to sign is:?).*", re.IGNORECASE | re.DOTALL)
# The key must start a word: "InvalidAccessKeySecret: The AccessKeySecret is incorrect" names no secret.
_SECRET_PAIR = re.compile(
    r"(?i)(?<![a-z0-9])((?:security[-_]?token|access[-_]?key[-_]?secret|signature|upload[-_]?auth|authorization)"
    r"(?:%3D|=|\"?\s*:\s*\"?|'\s*:\s*'))[^&\s\"',;}]+"
)
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/=_.%-]{64,}")


def scrub(message: object, secrets: Iterable[str] = ()) -> str:
    """Make `message` safe for an exception or a log line: no secrets, at most 300 characters."""
    text = str(message)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _scrub_unbounded(text)
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return text


class _ScrubFilter(logging.Filter):
    """Rewrites records of the SDKs' own loggers, which print request URLs (with
    SecurityToken), response bodies (with UploadAuth) and headers (with tokens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed SDK log call must not break the caller
            text = str(record.msg)
        record.msg, record.args = _scrub_unbounded(text), ()
        return True


def _scrub_unbounded(text: str) -> str:
    text = _STRING_TO_SIGN.sub(r"\1 [redacted]", text)
    text = _SECRET_PAIR.sub(r"\1***", text)
    return _LONG_TOKEN.sub("[redacted]", text)


_SDK_LOGGERS = (
    "aliyunsdkcore.client",
    "aliyunsdkcore.http.http_response",
    "oss2.http",
    "oss2.api",
    "oss2.auth",
    "oss2.resumable",
    "oss2.task_queue",
    "oss2.utils",
)
_installed = False


def install_sdk_log_scrubber() -> None:
    """Attach the scrubbing filter to the SDK loggers that may carry secrets (idempotent)."""
    global _installed
    if _installed:
        return
    for name in _SDK_LOGGERS:
        logging.getLogger(name).addFilter(_ScrubFilter())
    _installed = True
