"""What every executor worker is given: one declared `RunContext` (and nothing on `self` it does
not define), with the bookkeeping every kind shares: the intent written before a create, the
cleanup of what a finished replace superseded, and the upload byte count of the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vodsync.desired.items import Kind
from vodsync.engine.diff import Change
from vodsync.engine.execution import ExecOptions, Reporter
from vodsync.engine.ownership import Namespace, delete_media
from vodsync.state.interface import Store
from vodsync.state.records import Intent, Op
from vodsync.state.store import Record, RecordStatus

if TYPE_CHECKING:
    from vodsync.cloud.vod import VodClient


@dataclass
class UploadTally:
    """The bytes a run's uploads sent and when, shared by the upload workers' threads."""

    planned: int = 0  # bytes the plan being run uploads (what part threads are shared out by)
    sent: int = 0
    span: tuple[float, float] | None = None  # time.monotonic() of the first start and the last end
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, sent: int, began: float, ended: float) -> None:
        with self._lock:
            self.sent += sent
            span = self.span
            self.span = (min(span[0], began), max(span[1], ended)) if span else (began, ended)


@dataclass
class Claims:
    """The items one run holds in the state (`Store.claim`): it works on, and writes, only those.

    With SQLite every item is granted (the writer lock made this the only writer); with a shared
    state another process may hold some, and this run leaves them to it. `release` at the end
    of the run gives them back."""

    store: Store
    held: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, names: Iterable[str]) -> set[str]:
        """Of `names`, those this run holds now (claiming the ones it did not hold yet)."""
        names = set(names)
        with self._lock:
            new = names - self.held
        got = self.store.claim(sorted(new)) if new else set()
        with self._lock:
            self.held |= got
            return names & self.held

    def release(self) -> None:
        with self._lock:
            held, self.held = self.held, set()
        if held:
            self.store.release(held)


@dataclass(frozen=True)
class RunContext:
    """Everything a worker may use: the state, VOD, the uploader, the run's options and clocks,
    the stop flag (uploads stop between parts) and the reporter (progress, waiting)."""

    store: Store
    client: VodClient
    namespace: Namespace
    options: ExecOptions
    reporter: Reporter
    uploader: Callable[..., Any]
    checkpoint_dir: Path
    stopping: threading.Event
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    tally: UploadTally = field(default_factory=UploadTally)
    claims: Claims | None = None  # set per run (Executor._context); None: every item is this run's

    def mine(self, names: Iterable[str]) -> set[str]:
        """Of `names`, those this run may work on (`Claims.take`)."""
        return set(names) if self.claims is None else self.claims.take(names)

    def now(self) -> float:
        return self.clock()

    def save(self, record: Record) -> Record:
        self.store.put(record)
        return record

    def intend(self, change: Change, **intent: Any) -> Record:
        """Write what is about to be created before the call that creates it."""
        item = change.item
        assert item is not None
        prev = self.store.get(item.name)
        base = prev or Record(name=item.name, kind=item.kind, status=RecordStatus.CREATING, source=item.source)
        return self.save(base.intending(
            Intent(Op.CREATE, at=self.now(), title=item.metadata.get("title"), **intent),
            kind=item.kind, protect=item.protect, origin=base.origin if prev else item.made_by,
            reference_id=self.namespace.reference_id(item.name) if item.kind is Kind.VIDEO else None,
        ))

    def clean_up(self, name: str) -> None:
        """Delete the media a finished replace superseded, then forget the intent."""
        rec = self.store.get(name)
        if rec is None or rec.intent is None or rec.intent.op is not Op.CLEANUP or rec.intent.supersedes is None:
            return
        old = rec.intent.supersedes
        delete_media(self.client, old.kind or rec.kind, [old.media_id])
        self.save(rec.replace(intent=None))
