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

This module is the driver (ordering, concurrency, the per-item guard, recording
outcomes). The work of each kind is done by plain workers, `Recovery`,
`Uploads`, `Ingests` and `Edits` (their modules), each given one declared
`RunContext` (`context.py`) and yielding the outcomes the driver records after
the item's guard. What they share is in `execution.py` and `context.py`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vodsync.desired.items import Kind
from vodsync.engine.context import Claims, RunContext, UploadTally
from vodsync.engine.diff import Action, Change, diff_again, diff_one
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
)
from vodsync.engine.ingests import Ingests
from vodsync.engine.ownership import Namespace, reference_id, state_namespace, user_data
from vodsync.engine.plan import Plan
from vodsync.engine.recovery import Recovery
from vodsync.engine.uploads import Uploads
from vodsync.errors import CredentialsRejected, LeaseLost, UploadInterrupted, VodsyncError
from vodsync.state.interface import Store
from vodsync.state.store import Record, RecordStatus

if TYPE_CHECKING:  # the SDKs (oss2, aliyunsdkcore) cost ~0.3 s to import; `plan` never needs them
    from vodsync.cloud.vod import VodClient

__all__ = ["ExecOptions", "Executor", "NullReporter", "Outcome", "Reporter", "Result", "reference_id", "user_data"]


class Executor:
    """Carries out plans against one state file and one VOD account (see the module docstring)."""

    def __init__(
        self,
        store: Store,
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
        if uploader is None:
            from vodsync.cloud.upload import upload_file as uploader
        self.store, self.options = store, options or ExecOptions()
        self.reporter: Reporter = GuardedReporter(reporter or NullReporter())
        self.stopping = threading.Event()  # set on SIGTERM/Ctrl-C: no new work; uploads stop between parts
        self.rejected: CredentialsRejected | None = None  # VOD refused the credentials: the run stops
        self._result = Result()
        self._lock = threading.Lock()
        # ReferenceIds and markers derive from the namespace (ownership.py), recorded in the state on first use.
        self._base = RunContext(
            store=store, client=client, namespace=namespace or state_namespace(store), options=self.options,
            reporter=self.reporter, uploader=uploader, checkpoint_dir=checkpoint_dir, stopping=self.stopping,
            clock=clock, sleep=sleep,
        )

    @property
    def namespace(self) -> Namespace:
        return self._base.namespace

    def _context(self) -> RunContext:
        """The one context every worker of a run is given (`stopping` may have been replaced)."""
        return dataclasses.replace(self._base, stopping=self.stopping, tally=UploadTally(),
                                   claims=Claims(self.store))

    def _claim(self, ctx: RunContext, batch: Sequence[Change]) -> list[Change]:
        """Of `batch`, the changes of the items this run now holds, each as it is still needed.

        Items are claimed as a worker comes to them (not all at the start), so processes that
        share a state share the work. Another process may hold an item (it is left to that
        process), or may have worked on it between the plan and the claim: the change is then
        planned again from the record (`diff_again`); one that now needs another kind of work
        than its batch does waits for the next pass."""
        names = {c.name for c in batch} | {c.record.name for c in batch if c.record is not None}
        mine = ctx.mine(names)
        kept: list[Change] = []
        for c in batch:
            if c.name not in mine or (c.record is not None and c.record.name not in mine):
                with self._lock:
                    self._result.elsewhere.append(c.name)
                log.info("%s: another process is working on it; left to it", c.name, extra={"item": c.name})
                continue
            if self.store.shared and c.action is not Action.MOVE:
                again = diff_again(c, self.store.get(c.name))
                if again is None or _lane(again) != _lane(c):
                    log.info("%s: %s by another process since the plan", c.name,
                             "done" if again is None else "changed", extra={"item": c.name})
                    continue
                c = again
            kept.append(c)
        return kept

    # ------------------------------------------------------------------ driver

    def run(self, plan: Plan) -> Result:
        self._result = Result()
        self.rejected = None
        ctx = self._context()
        try:
            return self._run(ctx, list(plan.actions))
        finally:
            assert ctx.claims is not None
            ctx.claims.release()

    def _run(self, ctx: RunContext, actions: list[Change]) -> Result:
        from vodsync.cloud.upload import settle_checkpoints

        settle_checkpoints(ctx.checkpoint_dir)  # before recovery resumes what they name
        Recovery(ctx).recover([c.name for c in actions], fetch_urls={c.name: c.item.fetch for c in actions if c.item})
        self._resettle(ctx, actions)
        self._execute(ctx, actions)
        if self.rejected is not None:
            raise self.rejected
        # The items this run worked on: not those it left to another process (a shared state),
        # whose ingest or transcoding is that process's to follow and to report.
        touched = {c.name for c in actions} - set(self._result.elsewhere)
        deadline = ctx.now() + self.options.wait  # one --wait for all the following below
        if self.options.follow:
            self._record(Ingests(ctx).follow(touched, deadline))
        held = self._held_back(actions)
        if held:  # the ingests they waited for have finished: carry them out now
            self._execute(ctx, held)
            self._record(Ingests(ctx).follow({c.name for c in held}, deadline))
        unsettled = self.store.records(statuses=(RecordStatus.INGESTING, RecordStatus.PROCESSING))
        self._result.unsettled = sorted(name for name in unsettled if name in touched)
        self._result.uploaded_bytes, self._result.upload_span = ctx.tally.sent, ctx.tally.span
        return self._result

    def recover(self, names: Iterable[str] | None = None, *, fetch_urls: Mapping[str, str] | None = None) -> None:
        """Settle the intents an interrupted run left behind (`Recovery.recover`)."""
        ctx = self._context()
        try:
            Recovery(ctx).recover(names, fetch_urls=fetch_urls)
        finally:
            assert ctx.claims is not None
            ctx.claims.release()

    def _execute(self, ctx: RunContext, actions: Sequence[Change]) -> None:
        uploads, urls, registers, updates, deletes = self._partition(actions)
        ctx.tally.planned = sum(c.upload_bytes for c in uploads)
        uploader, ingests, edits = Uploads(ctx), Ingests(ctx), Edits(ctx)
        with ThreadPoolExecutor(max_workers=max(1, self.options.concurrency)) as pool:
            futures: list[Future[None]] = []
            # Largest first: a big file started last would upload alone at the end, on one
            # worker's part threads, while the others sit idle (bench/upload_throughput.py).
            for c in sorted(uploads, key=lambda c: -c.upload_bytes):
                futures.append(pool.submit(self._guard, ctx, [c], lambda b: uploader.upload(b[0])))
            for batch in ingests.url_batches(urls):
                futures.append(pool.submit(self._guard, ctx, batch, ingests.submit_urls))
            for group in ingests.register_groups(registers):
                for batch in chunks(group, REGISTER_BATCH):
                    futures.append(pool.submit(self._guard, ctx, batch, ingests.register))
            for batch in edits.update_batches(updates):
                futures.append(pool.submit(self._guard, ctx, batch, edits.update))
            for f in futures:
                f.result()
        for c in self._claim(ctx, [c for c in actions if c.action is Action.TOUCH]):
            edits.touch(c)
        if self.stopping.is_set():
            self._result.not_started.extend(c.name for c in deletes)
        elif deletes:
            self._delete(edits, self._claim(ctx, deletes))

    def _delete(self, edits: Edits, deletes: Sequence[Change]) -> None:
        """Deletes, batch by batch: a refusal of the credentials stops them (the run ends with
        it); any other error fails its batch's items, which stay `deleting` for the next run."""
        before = {c.name: self.store.get(c.name) for c in deletes}
        for kind, batch in edits.deleting(deletes):
            outcomes: list[Outcome] = []
            try:
                outcomes.extend(edits.delete(kind, batch))
            except CredentialsRejected as err:
                self._credentials_rejected(err, {r.name: before[r.name] for r in batch})
                return
            except VodsyncError as err:
                outcomes.extend(self._fail(r.name, "delete", err, unusable=False) for r in batch)
            finally:
                self._record(outcomes)

    def _resettle(self, ctx: RunContext, actions: Iterable[Change]) -> None:
        """A record that says `failed` although its create is recorded (a job, a media ID: see
        `diff`) goes back to being followed: the job or media is settled at VOD, never created
        a second time, and the record ends up saying what VOD says."""
        for c in self._claim(ctx, [c for c in actions if c.action is Action.FOLLOW]):
            rec = self.store.get(c.name)
            if rec is None or rec.status is not RecordStatus.FAILED:
                continue
            status = RecordStatus.INGESTING if rec.job_id else RecordStatus.PROCESSING
            self.store.put(rec.replace(status=status))
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
        """Uploads, URL ingests, registrations, updates and deletes (touches and follows come after)."""
        parts: tuple[list[Change], ...] = ([], [], [], [], [])
        for c in actions:
            lane = _lane(c)
            if lane is not None:
                parts[lane].append(c)
        return parts

    def _record(self, outcomes: Iterable[Outcome]) -> None:
        """Record, log and show each outcome (a worker's, after its item's guard)."""
        for outcome in outcomes:
            with self._lock:
                self._result.outcomes.append(outcome)
            (log.info if outcome.ok else log.warning)(
                "%s %s: %s", outcome.action, outcome.name, outcome.message,
                extra={"item": outcome.name, "action": outcome.action, "ok": outcome.ok},
            )
            self.reporter.outcome(outcome)

    def _fail(self, name: str, action: str, err: BaseException, *, unusable: bool) -> Outcome:
        message = err.message if isinstance(err, VodsyncError) else f"unexpected error: {type(err).__name__}: {err}"
        rec = self.store.get(name)
        if rec is not None:
            keep = not unusable or rec.status is RecordStatus.CREATING
            self.store.put(rec.failed(message, status=None if keep else RecordStatus.FAILED))
        return Outcome(name, action, False, message)

    def _guard(self, ctx: RunContext, batch: Sequence[Change],
               work: Callable[[Sequence[Change]], Iterator[Outcome]]) -> None:
        """Run one worker on one item or batch (those of its items this run holds: `_claim`): its
        failure is the items' failure, never the run's. The outcomes it gave are recorded after
        it, outside this guard."""
        if self._not_starting([c.name for c in batch]):
            return
        batch = self._claim(ctx, batch)
        if not batch:
            return
        before = {c.name: self.store.get(c.name) for c in batch}
        outcomes: list[Outcome] = []
        try:
            outcomes.extend(work(batch))
        except UploadInterrupted:
            # Not a failure: the record stays `uploading`; the next run resumes the upload.
            with self._lock:
                self._result.stopped.extend(c.name for c in batch)
            for c in batch:
                log.info("upload %s: stopped at a part boundary; the next run resumes it", c.name,
                         extra={"item": c.name})
        except CredentialsRejected as err:
            self._credentials_rejected(err, before)
        except LeaseLost as err:  # another process took the item over: its outcome is that process's
            with self._lock:
                self._result.elsewhere.extend(c.name for c in batch)
            log.warning("%s", err.message, extra={"item": err.name})
        except Exception as err:  # noqa: BLE001 - one item's failure must not stop the others
            if not isinstance(err, VodsyncError):
                log.exception("unexpected error on %s", ", ".join(c.name for c in batch))
            outcomes.extend(self._fail(c.name, str(c.action), err, unusable=c.action is not Action.UPDATE)
                            for c in batch)
        self._record(outcomes)

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
                self.store.put(prev)


def _lane(c: Change) -> int | None:
    """Which worker a change goes to: 0 uploads, 1 URL ingests, 2 registrations, 3 updates,
    4 deletes; None for touches and follows, which come after them."""
    if c.action in (Action.DELETE, Action.UPDATE):
        return 4 if c.action is Action.DELETE else 3
    if c.action in (Action.TOUCH, Action.FOLLOW):
        return None
    return {Kind.URL: 1, Kind.REGISTER: 2}.get(c.kind, 0)
