"""Logging for the CLI and the daemon: one line per event, text or JSON, with secrets scrubbed.

Owns `setup_logging` (the root handler vodsync installs), the two formatters,
and `SecretRedactingFilter`, a defence in depth behind the rule that secrets
never reach a log line: whatever a caller logs by mistake — an AccessKeySecret
in a dict repr, an UploadAuth in an SDK message, a signed URL's `Signature=` —
is scrubbed from the message, the `extra` fields, the traceback and the stack
before any formatter sees it. Secrets known by value (the configured
AccessKeySecret and SecurityToken, which `VodClient` registers when it is made)
are registered with `register_secret` and scrubbed wherever they appear; the
short-lived upload tokens are caught by their shape.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import IO, Any, Literal

REDACTED = "***"

# Keys whose values are secrets, in the spellings the SDKs, oss2, HTTP and our own code use.
SECRET_KEYS: tuple[str, ...] = (
    "AccessKeySecret",
    "access_key_secret",
    "SecurityToken",
    "security_token",
    "UploadAuth",
    "upload_auth",
    "Signature",
    "x-oss-security-token",
    "x-acs-security-token",
    "Authorization",
    "password",
)
_SECRET_KEYS_LOWER = frozenset(k.lower() for k in SECRET_KEYS)

# `Key=value`, `Key: value`, `'Key': 'value'`, `"Key":"value"`. Authorization values contain a
# space ("OSS id:signature"), so they run to the end of the quoted string or line. A key must start a
# word: in "InvalidAccessKeySecret: The AccessKeySecret is incorrect" (an error code and its message)
# "AccessKeySecret" is part of a longer name and "The" is no secret.
_KEYS_PATTERN = "|".join(
    re.escape(k) for k in sorted(SECRET_KEYS, key=len, reverse=True) if k != "Authorization"
)
_KEY_VALUE = re.compile(
    rf"(?<![A-Za-z0-9])(?P<key>{_KEYS_PATTERN})(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\"'&\s,;)}}\]]+)",
    re.IGNORECASE,
)
_AUTHORIZATION = re.compile(
    r"(?<![A-Za-z0-9])(?P<key>Authorization)(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\"'\r\n,}]+)", re.IGNORECASE
)

# A registered secret shorter than this would scrub ordinary words; such values are not secrets anyway.
_MIN_SECRET_LENGTH = 4

_secrets_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_secrets_re: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Scrub `value` from every later log record (no-op for None or very short strings)."""
    global _secrets, _secrets_re
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets = _secrets | {value}
        # Longest first, so a secret that contains another is scrubbed whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secrets_re = re.compile("|".join(re.escape(s) for s in ordered))


def forget_secrets() -> None:
    """Drop every registered secret (for tests and credential rotation)."""
    global _secrets, _secrets_re
    with _secrets_lock:
        _secrets = frozenset()
        _secrets_re = None


# `scheme://user:password@host`: credentials in a URL (a source behind basic authentication).
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/?#@\s\"'<>]+@", re.IGNORECASE)


def redact_url_userinfo(text: str) -> str:
    """`text` with the `user:password@` of every URL in it replaced by `***@`."""
    if "@" not in text or "://" not in text:
        return text
    return _URL_USERINFO.sub(lambda m: m["scheme"] + REDACTED + "@", text)


def redact(text: str) -> str:
    """`text` with registered secrets, values of secret-bearing keys and URL passwords replaced by `***`."""
    pattern = _secrets_re
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = redact_url_userinfo(text)
    if any(k in text.lower() for k in _SECRET_KEYS_LOWER):
        text = _AUTHORIZATION.sub(lambda m: m["key"] + m["sep"] + REDACTED, text)
        text = _KEY_VALUE.sub(lambda m: m["key"] + m["sep"] + REDACTED, text)
    return text


def _redact_value(key: str | None, value: Any, depth: int = 0) -> Any:
    if key is not None and key.lower() in _SECRET_KEYS_LOWER and value not in (None, ""):
        return REDACTED
    if depth > 8:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(None, v, depth + 1) for v in value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    # Anything else will be rendered with str() by a formatter: scrub that rendering now.
    return redact(str(value))


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def record_extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and not k.startswith("_")}


class SecretRedactingFilter(logging.Filter):
    """Scrubs secrets from a record's message, extra fields, traceback and stack; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not hide the event
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in record_extra(record).items():
            setattr(record, key, _redact_value(key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    when = _dt.datetime.fromtimestamp(record.created, tz=_dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", **extra}` on one line (json escapes newlines)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record_extra(record).items():
            out.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return redact(json.dumps(out, ensure_ascii=False, default=str))


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class TextFormatter(logging.Formatter):
    """`TIME LEVEL logger: message key=value ...` on one line, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = _dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        parts = [f"{when} {record.levelname:<7} {record.name}: {_one_line(record.getMessage())}"]
        for key, value in record_extra(record).items():
            rendered = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            parts.append(f"{key}={_one_line(rendered)}")
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            parts.append("exc=" + _one_line(record.exc_text))
        return redact(" ".join(parts))


LogFormat = Literal["auto", "text", "json"]


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False


def setup_logging(
    level: int | str = "info",
    fmt: LogFormat = "auto",
    stream: IO[str] | None = None,
    *,
    quiet_loggers: Iterable[str] = ("urllib3", "oss2", "aliyunsdkcore", "watchdog"),
) -> logging.Handler:
    """Install vodsync's one root handler (replacing one installed before) and return it.

    `fmt="auto"` writes JSON unless `stream` is a terminal. Chatty third-party
    loggers are held at WARNING unless `level` is DEBUG.
    """
    if fmt not in ("auto", "text", "json"):
        raise ValueError(f"log format must be auto, text or json, not {fmt!r}")
    stream = sys.stderr if stream is None else stream
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    use_json = fmt == "json" or (fmt == "auto" and not _is_terminal(stream))

    handler = logging.StreamHandler(stream)
    handler.set_name("vodsync")
    handler.addFilter(SecretRedactingFilter())
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "vodsync"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in quiet_loggers:
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING)
    for name in SILENCED_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG else _SILENT)
    return handler


# Loggers whose records repeat, in the SDK's words, an error vodsync reports itself: aliyunsdkcore's
# client logs every ServerException at ERROR ("ServerException occurred. Host: ..."), before the
# translated error reaches the caller. Shown only with --log-level debug.
SILENCED_LOGGERS: tuple[str, ...] = ("aliyunsdkcore",)
_SILENT = logging.CRITICAL + 1
