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

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vodsync.desired.items import Kind
from vodsync.engine.diff import Action, Change, diff_one
from vodsync.engine.edits import Edits
from vodsync.engine.execution import (
    REGISTER_BATCH,
    ExecOptions,
    GuardedReporter,
    NullReporter,
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
from vodsync.engine.ownership import Namespace, delete_media, state_namespace
from vodsync.engine.plan import Plan
from vodsync.engine.recovery import Recovery
from vodsync.engine.uploads import Uploads
from vodsync.errors import CredentialsRejected, UploadInterrupted, VodsyncError
from vodsync.state.records import Intent, Op
from vodsync.state.store import Record, RecordStatus, StateStore

if TYPE_CHECKING:  # the SDKs (oss2, aliyunsdkcore) cost ~0.3 s to import; `plan` never needs them
    from vodsync.cloud.vod import VodClient

__all__ = ["ExecOptions", "Executor", "NullReporter", "Outcome", "Reporter", "Result", "reference_id", "user_data"]


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
        namespace: Namespace | None = None,
    ) -> None:
        self.store = store
        self.client = client
        # ReferenceIds and markers derive from it (ownership.py); recorded in the state on first use.
        self.namespace = namespace or state_namespace(store)
        self.checkpoint_dir = checkpoint_dir
        self.options = options or ExecOptions()
        self.reporter: Reporter = GuardedReporter(reporter or NullReporter())
        if uploader is None:
            from vodsync.cloud.upload import upload_file as uploader
        self.uploader = uploader
        self.clock = clock
        self.sleep = sleep
        self._result = Result()
        self._upload_bytes = 0  # of the plan being run: what `_part_threads` shares out
        self._lock = threading.Lock()
        self._unreported = threading.local()  # outcomes of the item a guard is running, shown after it
        self.stopping = threading.Event()  # set on SIGTERM/Ctrl-C: no new work; uploads stop between parts
        self.rejected: CredentialsRejected | None = None  # VOD refused the credentials: the run stops

    # ------------------------------------------------------------------ driver

    def run(self, plan: Plan) -> Result:
        self._result = Result()
        self.rejected = None
        actions = list(plan.actions)
        from vodsync.cloud.upload import settle_checkpoints

        settle_checkpoints(self.checkpoint_dir)  # before recovery resumes what they name
        self.recover([c.name for c in actions], fetch_urls={c.name: c.item.fetch for c in actions if c.item})
        self._resettle(actions)
        self._execute(actions)
        if self.rejected is not None:
            raise self.rejected
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
            for batch in self._url_batches(urls):
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
        if self.stopping.is_set():
            self._result.not_started.extend(c.name for c in deletes)
        else:
            self._delete(deletes)

    def _resettle(self, actions: Iterable[Change]) -> None:
        """A record that says `failed` although its create is recorded (a job, a media ID: see
        `diff`) goes back to being followed: the job or media is settled at VOD, never created
        a second time, and the record ends up saying what VOD says."""
        for c in actions:
            if c.action is not Action.FOLLOW:
                continue
            rec = self.store.get(c.name)
            if rec is None or rec.status is not RecordStatus.FAILED:
                continue
            status = RecordStatus.INGESTING if rec.job_id else RecordStatus.PROCESSING
            self._save(rec.replace(status=status))
            log.info("%s: recorded as failed, but its %s is recorded; following it", c.name,
                     f"URL job {rec.job_id}" if rec.job_id else f"media {rec.remote_id}")

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
        """Record (and log) first; the reporter is shown it after the item's guard, if one runs."""
        with self._lock:
            self._result.outcomes.append(outcome)
        (log.info if outcome.ok else log.warning)(
            "%s %s: %s", outcome.action, outcome.name, outcome.message,
            extra={"item": outcome.name, "action": outcome.action, "ok": outcome.ok},
        )
        pending = getattr(self._unreported, "outcomes", None)
        if pending is None:
            self.reporter.outcome(outcome)
        else:
            pending.append(outcome)

    @contextlib.contextmanager
    def _reporting_after(self) -> Iterator[None]:
        """Outcomes recorded inside are shown to the reporter on the way out, outside the
        item's failure guard (which `GuardedReporter` makes doubly sure of)."""
        self._unreported.outcomes = pending = []
        try:
            yield
        finally:
            self._unreported.outcomes = None
            for outcome in pending:
                self.reporter.outcome(outcome)

    def _fail(self, name: str, action: str, err: BaseException, *, unusable: bool) -> None:
        message = err.message if isinstance(err, VodsyncError) else f"unexpected error: {type(err).__name__}: {err}"
        rec = self.store.get(name)
        if rec is not None:
            keep = not unusable or rec.status is RecordStatus.CREATING
            self.store.put(rec.failed(message, status=None if keep else RecordStatus.FAILED))
        self._record_outcome(Outcome(name, action, False, message))

    def _guard(self, change: Change, fn: Callable[[Change], None]) -> None:
        if self._not_starting([change.name]):
            return
        before = {change.name: self.store.get(change.name)}
        with self._reporting_after():
            try:
                fn(change)
            except UploadInterrupted:
                # Not a failure: the record stays `uploading`; the next run resumes the upload.
                with self._lock:
                    self._result.stopped.append(change.name)
                log.info("upload %s: stopped at a part boundary; the next run resumes it", change.name,
                         extra={"item": change.name})
            except CredentialsRejected as err:
                self._credentials_rejected(err, before)
            except Exception as err:  # noqa: BLE001 - one item's failure must not stop the others
                if not isinstance(err, VodsyncError):
                    log.exception("unexpected error on %s", change.name)
                self._fail(change.name, str(change.action), err, unusable=change.action is not Action.UPDATE)

    def _guard_batch(self, batch: Sequence[Change], fn: Callable[[Sequence[Change]], None]) -> None:
        if self._not_starting([c.name for c in batch]):
            return
        before = {c.name: self.store.get(c.name) for c in batch}
        with self._reporting_after():
            try:
                fn(batch)
            except CredentialsRejected as err:
                self._credentials_rejected(err, before)
            except Exception as err:  # noqa: BLE001
                if not isinstance(err, VodsyncError):
                    log.exception("unexpected error on a batch")
                for c in batch:
                    self._fail(c.name, str(c.action), err, unusable=c.action is not Action.UPDATE)

    def _not_starting(self, names: Sequence[str]) -> bool:
        """True when no new work may start: a stop was asked for (the items are counted as not
        started) or VOD refused the credentials (the run ends with that one error)."""
        if self.rejected is not None:
            return True
        if self.stopping.is_set():
            with self._lock:
                self._result.not_started.extend(names)
            return True
        return False

    def _credentials_rejected(self, err: CredentialsRejected, before: Mapping[str, Record | None]) -> None:
        """VOD refused the credentials: stop the run (`run` raises `err`), and take back the intents
        written for creates that never got through, so the next run has nothing to untangle. A record
        that gained a remote ID or job before the refusal keeps its intent (something exists)."""
        with self._lock:
            if self.rejected is None:
                self.rejected = err
        for name, prev in before.items():
            rec = self.store.get(name)
            if rec is None or rec.status not in (RecordStatus.CREATING, RecordStatus.DELETING):
                continue
            if (rec.remote_id, rec.job_id) != ((prev.remote_id, prev.job_id) if prev else (None, None)):
                continue
            if prev is None:
                self.store.delete(name)
            else:
                self._save(prev)

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
        base = prev or Record(name=item.name, kind=item.kind, status=RecordStatus.CREATING, source=item.source)
        return self._save(base.intending(
            Intent(Op.CREATE, at=self._now(), title=item.metadata.get("title"), **intent),
            kind=item.kind, protect=item.protect, origin=base.origin if prev else origin_of(item),
            reference_id=self.namespace.reference_id(item.name) if item.kind is Kind.VIDEO else None,
        ))

    def _cleanup(self, name: str) -> None:
        """Delete the media a finished replace superseded, then forget the intent."""
        rec = self.store.get(name)
        if rec is None or rec.intent is None or rec.intent.op is not Op.CLEANUP or rec.intent.supersedes is None:
            return
        old = rec.intent.supersedes
        self._delete_remote(old.kind or rec.kind, [old.media_id])
        self._save(rec.replace(intent=None))

    def _delete_remote(self, kind: Kind, ids: Sequence[str]) -> None:
        delete_media(self.client, kind, ids)
