"""The error families of vodsync.

Every error a user can see is a `VodsyncError`. Lower layers translate what they
catch (SDK, oss2, sqlite3, YAML) into one of these at their edge, so no foreign
exception escapes its layer. Each error says whether trying again can help
(`retryable`) and carries no secret in its message.
"""

from __future__ import annotations

import os


class VodsyncError(Exception):
    """Root of every error vodsync reports to a user."""

    retryable: bool = False
    exit_code: int = 1

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(VodsyncError):
    """Settings or credentials are missing, unreadable or unsafe."""


def display_path(path: str | os.PathLike[str]) -> str:
    """`path` as a user can open it from the working directory: relative when under it, else absolute."""
    absolute = os.path.abspath(path)
    try:
        rel = os.path.relpath(absolute)
    except ValueError:  # another drive (Windows)
        return absolute
    return absolute if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


class Location:
    """Where in a manifest something was found: file and 1-based line."""

    __slots__ = ("file", "line")

    def __init__(self, file: str, line: int | None = None) -> None:
        self.file = file
        self.line = line

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def __repr__(self) -> str:
        return f"Location({self.file!r}, {self.line!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.file, self.line) == (other.file, other.line)

    def __hash__(self) -> int:
        return hash((self.file, self.line))


class ManifestProblem:
    """One problem in a manifest: where it is, which field, and what is wrong."""

    __slots__ = ("location", "field", "message")

    def __init__(self, location: Location, field: str | None, message: str) -> None:
        self.location = location
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = f"{self.location}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"ManifestProblem({str(self)!r})"


class ManifestError(VodsyncError):
    """One or more manifests are invalid; nothing may be applied."""

    exit_code = 1

    # At most this many problems are written out; the message counts the rest ("and N more").
    SHOWN = 100

    def __init__(self, problems: list[ManifestProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems[: self.SHOWN])
        if len(self.problems) > self.SHOWN:
            lines += f"\n  and {len(self.problems) - self.SHOWN} more"
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"invalid manifests ({len(self.problems)} {noun}):\n{lines}")


class StateError(VodsyncError):
    """The state file cannot be opened, read or written."""


class StateLocked(StateError):
    """Another vodsync process holds the state file."""

    def __init__(self, path: str, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"state file {path} is locked by {who}; is another vodsync running?")
        self.pid = pid


class LeaseLost(StateError):
    """This process no longer holds an item's lease (a shared state): another process works on
    it now, and this one's outcome for it is not recorded (fencing: docs/scale-out.md)."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}; this process's outcome for it is not recorded")
        self.name = name


class CloudError(VodsyncError):
    """VOD or OSS answered with an error, or could not be reached.

    `code` is the API's own error code (for example `Throttling.User`), or
    `SDK.HttpError` for a network failure; `request_id` helps Alibaba support.
    `ambiguous`: the request may have reached the service, so a create may have taken
    effect (it is never repeated blindly).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retryable: bool = False,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(f"{code}: {message}", retryable=retryable)
        self.code = code
        self.api_message = message
        self.status = status
        self.request_id = request_id
        self.ambiguous = ambiguous


class CredentialExpired(CloudError):
    """An upload credential (STS token) has expired or was refused; refresh it and go on."""

    def __init__(self, code: str, message: str, **kw: object) -> None:
        super().__init__(code, message, retryable=True, **kw)  # type: ignore[arg-type]


class CredentialsRejected(CloudError):
    """VOD refused the account's credentials (unknown key, wrong secret, no RAM permission).

    No item can succeed with them, so a run stops at the first one instead of failing every item.
    """


class PathNotAllowed(VodsyncError):
    """A manifest names a local path outside the allowed roots."""


class LocalFileRefused(VodsyncError):
    """A local file to upload is not the regular file that was planned (swapped, a link, a device, changed)."""


class DeleteRefused(VodsyncError):
    """A run would delete more than the user allowed, or prune on an unsafe desired set."""


class UploadInterrupted(BaseException):  # noqa: N818 - not an error: a stop was asked for
    """An upload stopped at a part boundary because the run is stopping (Ctrl-C, SIGTERM).

    A BaseException on purpose: code that records an `Exception` as an item's failure must not
    catch it. The item is not failed: its record stays `uploading` and the next run resumes the
    multipart upload from the parts already in OSS. `sent`: the bytes of the parts this run
    landed before it stopped (they count as uploaded).
    """

    def __init__(self, key: str, sent: int = 0) -> None:
        super().__init__(key)
        self.key = key
        self.sent = sent
