"""What the executor and its parts share: options, outcomes, the reporter interface, and the
markers and intents vodsync records around every create (see `engine/executor.py`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from vodsync.desired.items import DesiredItem
from vodsync.engine.diff import Action, Change
from vodsync.state.records import Intent, MediaRef, Op, Record

log = logging.getLogger("vodsync.apply")

# Items per batched call (the API's limits, or what keeps a call's answer small).
VIDEO_BATCH, URL_BATCH, URL_QUERY_BATCH, REGISTER_BATCH, UPDATE_BATCH = 20, 20, 10, 10, 20


@dataclass(frozen=True)
class ExecOptions:
    concurrency: int = 4
    wait: float = 300.0  # seconds to follow URL ingests and transcoding before returning
    poll_interval: float = 2.0
    upload_threads: int = 4
    part_size: int | None = None  # None: 8-32 MiB, by file size (cloud.upload.choose_part_size)
    multipart_threshold: int = 16 * 1024 * 1024
    # Look at ingests and transcoding after the work (at least once). The daemon's upload jobs
    # leave that to its polls: one look per job would poll every transcoding media once per upload.
    follow: bool = True


@dataclass(frozen=True)
class Outcome:
    name: str
    action: str
    ok: bool
    message: str
    pending: bool = False  # accepted, but VOD is still working on it (ingest, transcode)


@dataclass
class Result:
    outcomes: list[Outcome] = field(default_factory=list)
    uploaded_bytes: int = 0
    unsettled: list[str] = field(default_factory=list)  # still ingesting or transcoding when the run ended
    # A stop (Ctrl-C, SIGTERM) cut these short: uploads stopped at a part boundary (their records
    # stay `uploading`, the next run resumes them) and items never started. Empty otherwise.
    stopped: list[str] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)
    # Another process (a shared state) held these items when this run came to them: left to it.
    elsewhere: list[str] = field(default_factory=list)
    # time.monotonic() when the first counted upload began and the last one ended
    upload_span: tuple[float, float] | None = None

    @property
    def upload_seconds(self) -> float:
        return self.upload_span[1] - self.upload_span[0] if self.upload_span else 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def cut_short(self) -> bool:
        """True only when a stop really left work undone."""
        return bool(self.stopped or self.not_started)


@dataclass(frozen=True)
class Waiting:
    """What `apply --wait` is following at VOD, and for how long it has been."""

    transcodes: int
    ingests: int
    elapsed: float  # seconds since the following began

    def text(self) -> str:
        """ "waiting for 3 transcodes, 1 URL ingest … 0:42" """
        what = [f"{n} {label}{'' if n == 1 else 's'}"
                for n, label in ((self.transcodes, "transcode"), (self.ingests, "URL ingest")) if n]
        minutes, seconds = divmod(int(self.elapsed), 60)
        hours, minutes = divmod(minutes, 60)
        clock = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
        return f"waiting for {', '.join(what) or 'VOD'} … {clock}"


@runtime_checkable
class Reporter(Protocol):
    """Where progress and outcomes go: rich on a terminal and log lines otherwise (`ui.py`), the
    daemon's log lines and metrics (`daemon/loop.py`). Every implementation is checked against
    this interface by `tests/test_reporters.py`.

    `upload_progress` reports the bytes this upload has sent, of the bytes it has to send (a
    resumed upload's `total` shrinks to what was still missing once the uploader knows it).
    The executor never lets a reporter's exception reach an item (`GuardedReporter`).
    """

    def upload_started(self, name: str, total: int) -> None: ...
    def upload_progress(self, name: str, done: int, total: int) -> None: ...
    def upload_finished(self, name: str) -> None: ...
    def outcome(self, outcome: Outcome) -> None: ...
    def waiting(self, waiting: Waiting) -> None: ...
    def notice(self, message: str) -> None: ...


class NullReporter:
    """A `Reporter` that shows nothing (embedders and tests that only want the `Result`)."""

    def upload_started(self, name: str, total: int) -> None:
        return None

    def upload_progress(self, name: str, done: int, total: int) -> None:
        return None

    def upload_finished(self, name: str) -> None:
        return None

    def outcome(self, outcome: Outcome) -> None:
        return None

    def waiting(self, waiting: Waiting) -> None:
        return None

    def notice(self, message: str) -> None:
        return None


class GuardedReporter:
    """A `Reporter` around another whose exceptions are logged, never raised: showing an outcome
    must not turn a finished upload into a failed item, nor a progress bar stop an upload."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def _call(self, method: str, *args: Any) -> None:
        try:
            getattr(self.inner, method)(*args)
        except Exception as err:  # noqa: BLE001 - a display problem is never the item's failure
            with self._lock:
                first = method not in self._warned
                self._warned.add(method)
            if first:  # once per method: a broken bar would otherwise log on every byte
                log.warning("could not show progress (%s): %s: %s", method, type(err).__name__, err,
                            exc_info=log.isEnabledFor(logging.DEBUG))

    def upload_started(self, name: str, total: int) -> None:
        self._call("upload_started", name, total)

    def upload_progress(self, name: str, done: int, total: int) -> None:
        self._call("upload_progress", name, done, total)

    def upload_finished(self, name: str) -> None:
        self._call("upload_finished", name)

    def outcome(self, outcome: Outcome) -> None:
        self._call("outcome", outcome)

    def waiting(self, waiting: Waiting) -> None:
        self._call("waiting", waiting)

    def notice(self, message: str) -> None:
        self._call("notice", message)


def chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def meta_json(item: DesiredItem) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in item.metadata.items()}


def superseded_media(change: Change, rec: Record | None) -> MediaRef | None:
    """The media a replace keeps serving until its successor is complete (and then deletes).

    A replace names it; a replace interrupted after its intent comes back as a resume, and the
    intent still names it: without that, the old media would never be deleted.
    """
    if rec is not None and change.action is Action.REPLACE and rec.remote_id:
        return MediaRef(rec.remote_id, rec.kind)
    if rec is not None and change.action is Action.RESUME and rec.intent is not None:
        return rec.intent.supersedes
    return None


def cleanup_intent(old: MediaRef | None, new_id: str) -> Intent | None:
    """What a finished replace leaves to do: delete the media it superseded (none: nothing)."""
    if old is None or old.media_id == new_id:
        return None
    return Intent(Op.CLEANUP, supersedes=old)


