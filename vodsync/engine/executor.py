"""Carry out a plan against VOD and OSS, recording every outcome. The engine's only I/O stage.

Crash safety rests on one rule: *write the intent to the state file before any
create call, and the returned ID right after it*. After a crash, `recover()`
settles every recorded intent before anything new is created (`recovery.py`
says how each kind is found again).

A failure in one item never stops the others: each task records its own
outcome and the run goes on.

A run, in order: settle the checkpoint writes a kill cut short, recover intents,
execute the plan, follow ingests and transcoding (`--wait`), then carry out the
edits an ingest in progress held back (`_held_back`) once it has delivered.

This module is the driver (ordering, concurrency, outcomes, the intent and
cleanup bookkeeping every kind shares); the work of each kind lives in
`recovery.py`, `uploads.py`, `ingests.py` and `edits.py`, mixed into `Executor`.
What they share is in `execution.py`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vodsync.desired.items import Kind
from vodsync.engine.diff import Action, Change, diff_one
from vodsync.engine.edits import Edits
from vodsync.engine.execution import (
    REGISTER_BATCH,
    URL_BATCH,
    ExecOptions,
    Outcome,
    Reporter,
    Result,
    chunks,
    log,
    origin_of,
    reference_id,
    user_data,
)
from vodsync.engine.ingests import Ingests
from vodsync.engine.plan import Plan
from vodsync.engine.recovery import Recovery
from vodsync.engine.uploads import Uploads
from vodsync.errors import VodsyncError
from vodsync.state.store import Record, RecordStatus, StateStore

if TYPE_CHECKING:  # the SDKs (oss2, aliyunsdkcore) cost ~0.3 s to import; `plan` never needs them
    from vodsync.cloud.vod import VodClient

__all__ = ["ExecOptions", "Executor", "Outcome", "Reporter", "Result", "reference_id", "user_data"]


class Executor(Recovery, Uploads, Ingests, Edits):
    """Carries out plans against one state file and one VOD account (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        client: VodClient,
        *,
        checkpoint_dir: Path,
        options: ExecOptions | None = None,
        reporter: Reporter | None = None,
        uploader: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.client = client
        self.checkpoint_dir = checkpoint_dir
        self.options = options or ExecOptions()
        self.reporter = reporter or Reporter()
        if uploader is None:
            from vodsync.cloud.upload import upload_file as uploader
        self.uploader = uploader
        self.clock = clock
        self.sleep = sleep
        self._result = Result()
        self._upload_bytes = 0  # of the plan being run: what `_part_threads` shares out
        self._lock = threading.Lock()
        self.stopping = threading.Event()  # set by the daemon on SIGTERM: no new work is started

    # ------------------------------------------------------------------ driver

    def run(self, plan: Plan) -> Result:
        self._result = Result()
        actions = list(plan.actions)
        from vodsync.cloud.upload import settle_checkpoints

        settle_checkpoints(self.checkpoint_dir)  # before recovery resumes what they name
        self.recover([c.name for c in actions], fetch_urls={c.name: c.item.fetch for c in actions if c.item})
        self._execute(actions)
        touched = {c.name for c in actions}
        deadline = self._now() + self.options.wait  # one --wait for all the following below
        self._follow(touched, deadline)
        held = self._held_back(actions)
        if held:  # the ingests they waited for have finished: carry them out now
            self._execute(held)
            self._follow({c.name for c in held}, deadline)
        unsettled = self.store.records(statuses=(RecordStatus.INGESTING, RecordStatus.PROCESSING))
        self._result.unsettled = sorted(name for name in unsettled if name in touched)
        return self._result

    def _execute(self, actions: Sequence[Change]) -> None:
        uploads, urls, registers, updates, deletes = self._partition(actions)
        self._upload_bytes = sum(c.upload_bytes for c in uploads)
        with ThreadPoolExecutor(max_workers=max(1, self.options.concurrency)) as pool:
            futures: list[Future[None]] = []
            # Largest first: a big file started last would upload alone at the end, on one
            # worker's part threads, while the others sit idle (bench/upload_throughput.py).
            for c in sorted(uploads, key=lambda c: -c.upload_bytes):
                futures.append(pool.submit(self._guard, c, self._upload))
            for batch in chunks(urls, URL_BATCH):
                futures.append(pool.submit(self._guard_batch, batch, self._submit_urls))
            for group in self._register_groups(registers):
                for batch in chunks(group, REGISTER_BATCH):
                    futures.append(pool.submit(self._guard_batch, batch, self._register))
            for batch in self._update_batches(updates):
                futures.append(pool.submit(self._guard_batch, batch, self._update))
            for f in futures:
                f.result()
        for c in actions:
            if c.action is Action.TOUCH:
                self._touch(c)
        self._delete(deletes)

    def _held_back(self, actions: Iterable[Change]) -> list[Change]:
        """The edits an ingest in progress held back (a new title, a new URL: `diff`), for the
        items whose ingest has since delivered its media."""
        held: list[Change] = []
        for c in actions:
            if c.action is not Action.FOLLOW or c.item is None:
                continue
            rec = self.store.get(c.name)
            if rec is None or rec.status not in (RecordStatus.PROCESSING, RecordStatus.READY):
                continue
            change = diff_one(c.item, rec)
            if change is not None and change.action in (Action.UPDATE, Action.REPLACE):
                held.append(change)
        return held

    def _partition(self, actions: Iterable[Change]) -> tuple[list[Change], ...]:
        uploads: list[Change] = []
        urls: list[Change] = []
        registers: list[Change] = []
        updates: list[Change] = []
        deletes: list[Change] = []
        for c in actions:
            if c.action is Action.DELETE:
                deletes.append(c)
            elif c.action is Action.UPDATE:
                updates.append(c)
            elif c.action in (Action.TOUCH, Action.FOLLOW):
                continue  # bookkeeping after the pool; following after the run's work
            elif c.kind is Kind.URL:
                urls.append(c)
            elif c.kind is Kind.REGISTER:
                registers.append(c)
            else:
                uploads.append(c)
        return uploads, urls, registers, updates, deletes

    def _record_outcome(self, outcome: Outcome) -> None:
        with self._lock:
            self._result.outcomes.append(outcome)
        self.reporter.outcome(outcome)
        (log.info if outcome.ok else log.warning)(
            "%s %s: %s", outcome.action, outcome.name, outcome.message,
            extra={"item": outcome.name, "action": outcome.action, "ok": outcome.ok},
        )

    def _fail(self, name: str, action: str, err: BaseException, *, unusable: bool) -> None:
        message = err.message if isinstance(err, VodsyncError) else f"unexpected error: {type(err).__name__}: {err}"
        rec = self.store.get(name)
        if rec is not None:
            changes: dict[str, Any] = {
                "last_result": f"failed: {message}"[:500],
                "last_error": message[:500],
                "attempts": rec.attempts + 1,
            }
            if unusable and rec.status is not RecordStatus.CREATING:
                changes["status"] = RecordStatus.FAILED
            self.store.put(rec.replace(**changes))
        self._record_outcome(Outcome(name, action, False, message))

    def _guard(self, change: Change, fn: Callable[[Change], None]) -> None:
        if self.stopping.is_set():
            return
        try:
            fn(change)
        except Exception as err:  # noqa: BLE001 - one item's failure must not stop the others
            if not isinstance(err, VodsyncError):
                log.exception("unexpected error on %s", change.name)
            self._fail(change.name, str(change.action), err, unusable=change.action is not Action.UPDATE)

    def _guard_batch(self, batch: Sequence[Change], fn: Callable[[Sequence[Change]], None]) -> None:
        if self.stopping.is_set():
            return
        try:
            fn(batch)
        except Exception as err:  # noqa: BLE001
            if not isinstance(err, VodsyncError):
                log.exception("unexpected error on a batch")
            for c in batch:
                self._fail(c.name, str(c.action), err, unusable=c.action is not Action.UPDATE)

    def _now(self) -> float:
        return self.clock()

    def _save(self, record: Record) -> Record:
        self.store.put(record)
        return record

    # ------------------------------------------------ intents and cleanup (every kind)

    def _intent(self, change: Change, **intent: Any) -> Record:
        """Write what is about to be created before the call that creates it."""
        item = change.item
        assert item is not None
        prev = self.store.get(item.name)
        base = prev or Record(name=item.name, kind=str(item.kind), status=RecordStatus.CREATING, source=item.source)
        intent = {"op": "create", "at": self._now(), "title": item.metadata.get("title"), **intent}
        return self._save(base.replace(
            kind=str(item.kind), status=RecordStatus.CREATING, intent=intent, protect=item.protect,
            origin=base.origin if prev else origin_of(item),
            reference_id=reference_id(item.name) if item.kind is Kind.VIDEO else None,
        ))

    def _cleanup(self, name: str) -> None:
        """Delete the media a finished replace superseded, then forget the intent."""
        rec = self.store.get(name)
        if rec is None or not rec.intent or rec.intent.get("op") != "cleanup":
            return
        self._delete_remote(Kind(rec.intent.get("kind") or rec.kind), [rec.intent["supersedes"]])
        self._save(rec.replace(intent=None))

    def _delete_remote(self, kind: Kind, ids: Sequence[str]) -> None:
        ids = [i for i in ids if i]
        if not ids:
            return
        if kind.remote_is_video:
            self.client.delete_videos(ids)
        elif kind is Kind.IMAGE:
            self.client.delete_images(ids)
        else:
            self.client.delete_attached_media(ids)
