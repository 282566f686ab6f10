"""`vodsync watch`: the reconcile loop that ties manifests, drop folders, the engine and the service manager together.

Owns the daemon's schedule and its lifecycle:

- *One pass* = desired (manifests: only the files that changed are read again,
  `ManifestCache`; plus the drop folders' finished files) -> `build_plan` over the
  items a change touched (every item on the interval) -> actions of items still in
  their retry backoff or in flight left out -> jobs handed to the worker pool
  (`workers.py`; executor runs with `wait=0`: URL jobs and transcoding are followed
  by later, cheap polls) and the pass returns. As jobs finish, the loop collects
  them: drop files finished (`done/`, `failed/`), per-item backoff persisted on
  failures; with a pass's last job, metrics, health and sd_notify status.
- *When*: a pass runs at start, when watchdog reports a burst of changes, when
  a drop file's stability window or an item's backoff ends, and every
  `interval` (a full pass that also reads VOD to catch drift); while anything is
  ingesting or transcoding, a poll runs every `ASYNC_POLL_SECONDS`. Between them
  the loop sleeps on an Event until the earliest of those times: no busy polling.
- *Broken manifests*: the valid files are reconciled, the broken ones reported
  (log, sd_notify STATUS, /healthz); nothing is pruned while any file is broken.
- *Pruning* waits until the manifests' item names read the same twice,
  `PRUNE_SETTLE_SECONDS` apart (`SettleWindow`): a manifest caught half
  rewritten is never one read away from deleting the other half.
- *Signals*: SIGTERM/SIGINT stop new work, make running multipart uploads stop
  at the next part boundary (their records stay `uploading`; a restart resumes
  from the parts already in OSS), and exit 0 within `STOP_TIMEOUT`. SIGHUP
  reloads the config (RELOADING=1 ... READY=1).

Threads: the main thread handles signals and sends the systemd watchdog
keep-alive; one loop thread plans, dispatches and collects; `concurrency` worker
threads carry out the jobs (an upload may run for an hour while the loop goes on);
watchdog and the HTTP server have their own threads. `Daemon.step()` runs one scheduling decision on the injected
clock, which is what the in-process tests drive.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vodsync.checksum import file_digest
from vodsync.cloud.vod import VodClient
from vodsync.daemon.backoff import ItemBackoff
from vodsync.daemon.leader import Leadership
from vodsync.daemon.manifests import LoadedManifests, ManifestCache
from vodsync.daemon.metrics import Health, Metrics, MetricsServer
from vodsync.daemon.notify import Notifier
from vodsync.daemon.watch import ChangeWatcher
from vodsync.daemon.workers import Claim, Job, JobResult, WorkPool, claim_all
from vodsync.desired.dropfolder import DropCandidate, DropFolder, check_labels, drop_folders
from vodsync.desired.items import DesiredItem, Move
from vodsync.engine.clients import vod_client
from vodsync.engine.diff import Action, Change
from vodsync.engine.execution import Waiting
from vodsync.engine.executor import ExecOptions, Executor, Outcome
from vodsync.engine.lifecycle import carry_out, split_state_only
from vodsync.engine.ownership import state_namespace
from vodsync.engine.plan import Plan, PlanOptions
from vodsync.engine.reconcile import build_plan
from vodsync.engine.targets import Names
from vodsync.errors import StateError, VodsyncError
from vodsync.state.interface import Store
from vodsync.state.store import Record, RecordStatus

# `ctx` below is the CLI's `Context` (config, manifests, roots, state, args, cloud()); the daemon
# sits below the CLI, so it takes the object and never imports its class.
Context = Any

log = logging.getLogger("vodsync.daemon")

ASYNC_POLL_SECONDS = 10.0  # how often URL jobs and transcoding are looked at while any is running
STOP_TIMEOUT = 30.0  # SIGTERM -> exit, at most (the unit's TimeoutStopSec is larger)
GC_STOP_WAIT = 10.0  # seconds a stop waits for the leader's gc under way (daemon/leader.py)
DROP_MAX_ATTEMPTS = 5  # a drop file that failed this often goes to failed/ (about 15 min of retries)
# --prune acts only on item names read the same twice this far apart (a manifest being rewritten
# in place is half a file for a moment; watchdog's debounce is short and an editor may pause longer).
PRUNE_SETTLE_SECONDS = 5.0
# The watcher's trailing debounce: a burst (`git pull`, an editor's write + rename) is one pass. Short,
# since an edit's pass is cheap (one file re-read) and its first API call is due within 1 s of the write.
WATCH_DEBOUNCE_SECONDS = 0.25
_ASYNC = (RecordStatus.INGESTING, RecordStatus.PROCESSING)
_INGESTED = (RecordStatus.PROCESSING, RecordStatus.READY)
_UPLOAD_ACTIONS = ("create", "replace", "resume")


# ------------------------------------------------------------------ reporter


class DaemonReporter:
    """The executor's progress sink in the daemon: log lines and upload metrics. It implements
    the executor's `Reporter` interface (`engine/execution.py`). (Stopping between parts is the
    uploader's, on the executor's `stopping`, which the daemon shares.)"""

    def __init__(
        self,
        metrics: Metrics,
        *,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self.outcomes: list[Outcome] = []

    def begin(self) -> None:
        with self._lock:
            self.outcomes = []

    def upload_started(self, name: str, total: int) -> None:
        with self._lock:
            self._sizes[name] = total
            self._last[name] = self.clock()
        log.info("upload %s: started (%d bytes)", name, total, extra={"item": name, "bytes": total})

    def upload_progress(self, name: str, done: int, total: int) -> None:
        now = self.clock()
        with self._lock:
            if now - self._last.get(name, now) < self.every:
                return
            self._last[name] = now
        log.info("upload %s: %d of %d bytes", name, done, total, extra={"item": name, "bytes": done})

    def upload_finished(self, name: str) -> None:
        with self._lock:
            self._last.pop(name, None)

    def outcome(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)
            size = self._sizes.pop(outcome.name, None) if outcome.action in _UPLOAD_ACTIONS else None
        if outcome.ok and size is not None:
            self.metrics.uploaded(size)
        self.metrics.queue_depth.dec()

    def waiting(self, waiting: Waiting) -> None:
        if waiting.transcodes or waiting.ingests:
            log.debug("%s", waiting.text())  # the daemon follows with later polls, not by waiting

    def notice(self, message: str) -> None:
        log.warning("%s", message)

    def final_outcomes(self) -> dict[str, Outcome]:
        """The last word per item (an item may report twice: submitted, then ingested)."""
        with self._lock:
            return {o.name: o for o in self.outcomes}


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class LoopSettings:
    """What the loop needs from flags and the config file; rebuilt on SIGHUP."""

    manifests: Path
    roots: list[Path] | None
    interval: float
    prune: bool
    max_delete: int | None
    concurrency: int
    drop_settings: tuple[Any, ...] = ()
    http: str | None = None
    lease_seconds: float = 30.0  # a shared state: when an item another process held may be free again

    @classmethod
    def from_context(cls, ctx: Context) -> LoopSettings:
        args, config = ctx.args, ctx.config
        return cls(
            manifests=ctx.manifests,
            roots=ctx.roots,
            interval=float(getattr(args, "interval", None) or config.daemon.interval_seconds),
            prune=bool(getattr(args, "prune", False) or config.prune),
            max_delete=config.max_delete,
            concurrency=config.concurrency,
            drop_settings=tuple(config.drop_folders),
            http=getattr(args, "http", None) or config.daemon.http,
            lease_seconds=config.lease_seconds,
        )


@dataclass
class PassReport:
    """What one pass did, for tests and the summary log line."""

    planned: int = 0
    deferred: list[str] = field(default_factory=list)
    ingested: list[str] = field(default_factory=list)  # drop files finished as success
    failed_files: list[str] = field(default_factory=list)  # drop files moved to failed/
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    manifest_error: str | None = None
    interrupted: bool = False
    error: str | None = None
    in_flight: list[str] = field(default_factory=list)  # planned, left out: a worker has them already
    scope: int | None = None  # items planned, when the pass planned only the ones a change touched
    # Jobs handed to the pool and not collected yet: the pass is finished (metrics, /healthz, the
    # "pass done" line) when the last one is.
    pending: int = 0
    started: float = field(default=0.0, repr=False)
    candidates: dict[str, tuple[DropFolder, DropCandidate]] = field(default_factory=dict, repr=False)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if not o.ok]


class SettleWindow:
    """Whether the manifests' item names have been read the same twice, `seconds` apart.

    Pruning deletes what a read of the manifests lacks; one read of a file that is being
    rewritten in place (truncated, half written) lacks the other half. So the daemon prunes
    only once a second read, at least `seconds` after the names last changed, found them
    unchanged; until then `wake_at` is when to read again.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.names: frozenset[str] | None = None
        self.since = 0.0
        self.settled = False

    def read(self, names: frozenset[str], now: float) -> None:
        if names != self.names:
            self.names, self.since, self.settled = names, now, False
        elif now - self.since >= self.seconds:
            self.settled = True

    def wake_at(self) -> float | None:
        return None if self.settled or self.names is None else self.since + self.seconds


# ------------------------------------------------------------------ the daemon


class Daemon:
    """The reconcile loop over one state store and one VOD client. See the module docstring."""

    def __init__(
        self,
        settings: LoopSettings,
        store: Store,
        client: VodClient,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        backoff: ItemBackoff | None = None,
        exec_options: ExecOptions | None = None,
        async_poll: float = ASYNC_POLL_SECONDS,
        uploader: Callable[..., Any] | None = None,
        prune_settle: float = PRUNE_SETTLE_SECONDS,
        claim: Claim = claim_all,  # which of a job's items its worker takes up (leases: the executor's)
    ) -> None:
        self.store = store
        self.client = client
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.health = health or Health(settings.interval, clock=clock)
        self.notifier = notifier or Notifier(None)
        self.rng = rng or random.Random()
        self.backoff = backoff or ItemBackoff()
        self.async_poll = async_poll
        self.uploader = uploader
        self.stopping = threading.Event()  # shared with every executor: no new work once set
        base = exec_options or ExecOptions()
        self.exec_options = dataclasses.replace(base, wait=0.0, concurrency=settings.concurrency)
        self.reporter = DaemonReporter(self.metrics)
        self.settings = settings
        self.leadership = Leadership(store)
        self.folders: list[DropFolder] = []
        self._configure_folders(settings)

        self._wake = threading.Event()
        # Uploads and the other actions run here, so a pass never waits for them (`workers.py`).
        self.pool = WorkPool(self._run_job, settings.concurrency, stopping=self.stopping, claim=claim,
                             on_finished=self._wake.set)
        self._lock = threading.Lock()  # guards the flags below (set from watchdog/signal threads)
        self._manifests_dirty = True
        self._touched: set[Path] | None = None  # manifest paths changed since the last read; None: all
        self._replan: set[str] = set()  # items to plan again: left out while in flight, now finished
        # Items another process held (a shared state), and when its lease may have run out: if that
        # process died, this one takes them up then, not at the next interval.
        self._elsewhere: set[str] = set()
        self._elsewhere_at: float | None = None
        self._waiting: set[str] = set()  # items a pass left out because they were in flight
        self._plan_all = False  # a pass ended by an error: what it had to plan is planned whole next time
        self._freeze_after = False  # this pass read every manifest: collect, then freeze what is left
        self._drops_dirty = True
        self._reload_requested = False
        self._next_full = clock()
        self._drop_wake: float | None = None
        self._next_retry: float | None = None
        self._next_poll: float | None = None
        self._manifests: LoadedManifests | None = None
        self.manifest_cache = ManifestCache(settings.manifests, roots=settings.roots)
        self._settle = SettleWindow(prune_settle)
        self._reported_error: str | None = None
        self.watcher: ChangeWatcher | None = None
        # SIGHUP: returns settings from a freshly read config (serve() builds it from the CLI's Context).
        self.reread_settings: Callable[[], LoopSettings] | None = None
        self.on_first_plan: Callable[[], None] | None = None  # serve_forever: send READY=1
        self.passes = 0
        self._counts: dict[str, int] = {}  # items by status as of the last pass or poll
        self.last_report: PassReport | None = None

    # -- configuration --------------------------------------------------------------------

    def _configure_folders(self, settings: LoopSettings) -> None:
        """Keep the DropFolder of an unchanged setting (its stability and done memory); build the rest."""
        # Settings hold lists (tags), so they are compared, not hashed.
        old = list(self.folders)
        fresh = [s for s in settings.drop_settings if not any(f.settings == s for f in old)]
        built = drop_folders(fresh, hash_file=self._hash_file, clock=self.clock)
        folders = [next(f for f in [*old, *built] if f.settings == s) for s in settings.drop_settings]
        check_labels(folders)  # drop_folders checked the new ones only among themselves
        self.folders = folders

    def _hash_file(self, path: str) -> str:
        """The content digest through the state's cache, so a restart does not re-read every kept file."""
        before = os.stat(path)
        cached = self.store.cached_hash(path, before.st_size, before.st_mtime_ns)
        if cached:
            return cached
        digest = file_digest(path)
        after = os.stat(path)
        if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
            self.store.remember_hash(path, before.st_size, before.st_mtime_ns, digest)
        return digest

    def reload(self, settings: LoopSettings) -> None:
        """Take new settings (SIGHUP): drop folders, interval, prune; reload manifests on the next pass."""
        self._configure_folders(settings)
        if (settings.manifests, settings.roots) != (self.settings.manifests, self.settings.roots):
            self.manifest_cache = ManifestCache(settings.manifests, roots=settings.roots)
        self.settings = settings
        self.health.interval_seconds = settings.interval
        with self._lock:
            self._manifests_dirty = self._drops_dirty = True
            self._touched = None
            self._next_full = min(self._next_full, self.clock() + settings.interval)
        self._wake.set()

    def watch_paths(self) -> tuple[list[Path], list[Path]]:
        return [self.settings.manifests], [f.path for f in self.folders]

    # -- events in ------------------------------------------------------------------------

    def on_change(self, paths: Iterable[Path]) -> None:
        """A debounced burst of file-system changes (watchdog thread)."""
        manifests = os.path.abspath(self.settings.manifests)
        folders = [str(f.path) for f in self.folders]
        touched_manifests = touched_drops = False
        changed: list[Path] = []
        for p in paths:
            s = os.path.abspath(p)
            if s == manifests or s.startswith(manifests + os.sep):
                touched_manifests = True
                changed.append(Path(s))
            elif any(s == d or os.path.dirname(s) == d for d in folders):
                touched_drops = True
        with self._lock:
            self._manifests_dirty |= touched_manifests
            if self._touched is not None:
                self._touched.update(changed)
            self._drops_dirty |= touched_drops
        if touched_manifests or touched_drops:
            log.debug("changes under %s", "manifests" if touched_manifests else "drop folders")
            self._wake.set()

    def request_reload(self) -> None:
        with self._lock:
            self._reload_requested = True
        self._wake.set()

    def request_stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    # -- scheduling -----------------------------------------------------------------------

    def next_wake(self) -> float:
        """The clock time at which something is next due (the loop sleeps until then or an event)."""
        times = [self._next_full]
        for t in (self._drop_wake, self._next_retry, self._next_poll, self._settle_due(), self._elsewhere_at):
            if t is not None:
                times.append(t)
        return min(times)

    def _settle_due(self) -> float | None:
        """When to read the manifests again so that --prune can act (see `SettleWindow`)."""
        return self._settle.wake_at() if self.settings.prune else None

    def step(self) -> PassReport | None:
        """Run whatever is due at `clock()` (a pass, a poll or nothing); return the pass's report."""
        self._collect()
        now = self.clock()
        settle_at = self._settle_due()
        with self._lock:
            reload, self._reload_requested = self._reload_requested, False
            if settle_at is not None and now >= settle_at:
                self._manifests_dirty = True  # the second read of the settle window
            if self._elsewhere_at is not None and now >= self._elsewhere_at:
                self._replan |= self._elsewhere
                self._elsewhere, self._elsewhere_at = set(), None
            dirty = self._manifests_dirty or self._drops_dirty or bool(self._replan)
        if reload:
            self._reload_config()
        due = (
            dirty
            or now >= self._next_full
            or (self._drop_wake is not None and now >= self._drop_wake)
            or (self._next_retry is not None and now >= self._next_retry)
        )
        report = self.reconcile() if due else None
        if self._next_poll is not None and self.clock() >= self._next_poll:
            self.poll()  # also after a pass: passes closer together than polls must not put them off
        return report

    def _reload_config(self) -> None:
        """SIGHUP in the loop thread: re-read flags + config through the CLI's Context."""
        self.notifier.reloading("reloading the config")
        if self.reread_settings is None:  # embedded without a CLI context: callers use reload(settings)
            self.notifier.ready(self._status_text())
            return
        try:
            settings = self.reread_settings()
            if settings.manifests != self.settings.manifests:
                log.info("manifests directory is now %s", settings.manifests)
            self.reload(settings)
            self.restart_watcher()
            log.info("config reloaded: %d drop folder(s), full reconcile every %.0f s",
                     len(self.folders), settings.interval)
        except VodsyncError as err:
            log.error("config not reloaded, keeping the running one: %s", err.message)
        self.notifier.ready(self._status_text())

    # -- one pass -------------------------------------------------------------------------

    def reconcile(self) -> PassReport:
        """One pass; never raises for a failed item or a broken manifest (both are reported)."""
        self._collect()
        started = time.monotonic()
        now = self.clock()
        report = PassReport(started=started)
        with self._lock:
            full = now >= self._next_full  # the interval's pass over everything
            reload_manifests = self._manifests_dirty or self._manifests is None or full
            self._manifests_dirty = self._drops_dirty = False
            touched, self._touched = (None if full else self._touched), set()
            replan, self._replan = self._replan, set()
        if full:
            self._next_full = now + self.settings.interval
        # Of it, the drift read, pruning and gc are the leader's (one daemon per shared state: leader.py).
        drift = self.leadership.check() and full
        try:
            self._reconcile(now, report, reload_manifests=reload_manifests, full=full, drift=drift,
                            touched=touched, replan=replan)
            if drift:
                self.leadership.collect_garbage(self.client, remove=self.settings.prune)
            self.health.state_reachable(None)
        except VodsyncError as err:  # e.g. the state file: report, try again on the next pass
            report.error = err.message
            log.error("reconcile failed: %s", err.message)
            if isinstance(err, StateError) and err.retryable:  # a database that cannot be reached now
                self.health.state_reachable(err.message)
        except Exception as err:  # noqa: BLE001 - the loop must survive a bug in one pass
            report.error = f"{type(err).__name__}: {err}"
            log.exception("reconcile failed")
        if self._freeze_after:
            self._freeze_after = False
            # A 100k-item library is millions of long-lived objects, and a whole pass leaves garbage
            # behind: a full collection during the next edit's pass stalled it by seconds. Collected
            # now and frozen, later collections scan only what later passes allocate.
            gc.collect()
            gc.freeze()
        if report.error is not None:  # the changes it consumed (edited files, items to plan again) are not lost
            with self._lock:
                self._plan_all, self._touched = True, None
        if not report.pending:  # else the last of its jobs finishes it (`_collect`)
            self._after_pass(report, started)
        self._planned()
        return report

    def _planned(self) -> None:
        hook, self.on_first_plan = self.on_first_plan, None
        if hook is not None:
            hook()

    def _reconcile(self, now: float, report: PassReport, *, reload_manifests: bool, full: bool, drift: bool,
                   touched: set[Path] | None, replan: set[str]) -> None:
        plan_all = self._plan_all
        whole = full or self._manifests is None or plan_all  # else only the items a change touched
        if reload_manifests or self._manifests is None:
            if self._manifests is None or touched is None:
                gc.unfreeze()  # the library read last time may be collected like anything else
                self._freeze_after = True
            self._manifests = self._load_manifests(None if self._manifests is None else touched)
            whole |= self._manifests.changed is None
            was_settled = self._settle.settled
            self._settle.read(frozenset(item.name for item in self._manifests.items), now)
            if self.settings.prune and self._settle.settled and not was_settled:
                log.info("manifests read the same %g s apart: pruning may act", self._settle.seconds)
                whole = True  # the deletes held back while the names were settling
        loaded = self._manifests
        self._plan_all = False
        if loaded.error is not None:
            report.manifest_error = f"{len(loaded.skipped)} manifest file(s) skipped: {', '.join(loaded.skipped)}"

        retry_due = self._next_retry is not None and now >= self._next_retry
        whole |= retry_due  # the state knows when, not which items: look at all of them
        # 100k records take ~0.7 s to read: a pass over a few items reads just those.
        records = self.store.records() if whole else None
        candidates = self._scan_drop_folders(records.get if records is not None else self.store.get, report)
        if not (reload_manifests or candidates or retry_due or full or replan or plan_all):
            return  # only a drop file still being written changed: nothing to plan

        drop_items = [c.item for _, c in candidates.values()]
        desired: list[DesiredItem] = [*loaded.items, *drop_items]
        moves: Sequence[Move] = loaded.moves
        targets = None
        if records is None:
            scope = {*(loaded.changed if reload_manifests and loaded.changed else ()), *candidates, *replan}
            moves = [m for m in loaded.moves if m.old in scope or m.new in scope]
            scope.update(n for m in moves for n in (m.old, m.new))
            records = {n: r for n in scope if (r := self.store.get(n)) is not None}
            targets = Names(frozenset(scope))
            report.scope = len(scope)
        prune = self.settings.prune and loaded.complete and self._settle.settled and self.leadership.leading
        options = PlanOptions(prune=prune, max_delete=self.settings.max_delete)
        plan = self._plan(desired, options, records, refresh=drift, moves=moves, targets=targets)
        if plan.refusal:
            log.error("%s", plan.refusal)  # the deletes are already out of the actions; the rest goes ahead
            plan = dataclasses.replace(plan, refusal=None)

        # `records` is still current: planning writes only the hash cache.
        deferred = {n for n, r in records.items() if r.next_attempt_at is not None and r.next_attempt_at > now}
        busy = self.pool.in_flight()
        actions = []
        for c in plan.actions:
            if c.name in busy:  # a worker has it: planned again once that job is collected
                report.in_flight.append(c.name)
            elif c.name in deferred and c.action is not Action.TOUCH:
                report.deferred.append(c.name)
            else:
                actions.append(c)
        if report.in_flight:
            with self._lock:
                self._waiting.update(report.in_flight)
        plan = dataclasses.replace(plan, actions=tuple(actions))
        report.planned = len(plan.changes)
        if plan.changes:
            log.info("reconcile: %s", ", ".join(str(c) for c in plan.changes[:20])
                     + (f" and {len(plan.changes) - 20} more" if len(plan.changes) > 20 else ""),
                     extra={"actions": len(plan.changes)})

        self._planned()  # READY=1 after the first plan, not after its uploads
        if plan.actions:
            report.candidates = candidates
            self._execute(plan, report)

    def _load_manifests(self, touched: set[Path] | None) -> LoadedManifests:
        loaded = self.manifest_cache.load(touched)
        if loaded.error is not None:
            text = str(loaded.error.message)
            if text != self._reported_error:  # one report per distinct problem, not one per pass
                shown = loaded.error.problems[: loaded.error.SHOWN]
                for problem in shown:
                    log.error("invalid manifest, skipped (its items are left as they are): %s", problem,
                              extra={"file": problem.location.file, "line": problem.location.line})
                if len(loaded.error.problems) > len(shown):
                    log.error("and %d more manifest problem(s)", len(loaded.error.problems) - len(shown))
            self._reported_error = text
        else:
            if self._reported_error is not None:
                log.info("manifests are valid again")
            self._reported_error = None
        return loaded

    def _plan(self, desired: list[DesiredItem], options: PlanOptions, records: dict[str, Record], *,
              refresh: bool, moves: Sequence[Move] = (), targets: Names | None = None) -> Plan:
        if refresh:
            try:
                return build_plan(desired, self.store, options, refresh_with=self.client, remember_hashes=True,
                                  records=records, moves=moves, targets=targets)
            except VodsyncError as err:
                log.warning("could not read VOD to check for drift, planning from the state file: %s",
                            err.message)
        return build_plan(desired, self.store, options, remember_hashes=True, records=records, moves=moves,
                          targets=targets)

    def _executor(self, reporter: DaemonReporter, options: ExecOptions | None = None) -> Executor:
        kwargs: dict[str, Any] = {}
        if self.uploader is not None:
            kwargs["uploader"] = self.uploader
        executor = Executor(self.store, self.client, checkpoint_dir=self.store.checkpoint_dir,
                            options=options or self.exec_options, reporter=reporter, **kwargs)
        executor.stopping = self.stopping
        return executor

    def _execute(self, plan: Plan, report: PassReport) -> None:
        """Carry out the records-only actions now, then hand the rest to the pool: one job per upload
        (largest first), one for the other actions (submitted first: they are quick)."""
        self.reporter.begin()
        try:
            state_only, plan = split_state_only(plan)  # moves and imports: records only, before the rest
            carry_out(state_only, self.store, self.client, self.reporter)
        finally:
            done = self.reporter.final_outcomes()
            report.outcomes.update(done)
            self._settle_backoff(done)
        uploads: list[Change] = []
        others: list[Change] = []
        for c in plan.actions:
            is_upload = c.action in _UPLOAD_ACTIONS and c.item is not None and c.item.kind.uploads_local_file
            (uploads if is_upload else others).append(c)
        uploads.sort(key=lambda c: -c.upload_bytes)
        rest = tuple(others)
        jobs = ([Job(rest, report)] if rest else []) + [Job((c,), report) for c in uploads]
        report.pending += len(jobs)
        for job in jobs:
            self.pool.submit(job)
        self.metrics.queue_depth.set(len(self.pool.in_flight()))

    def _run_job(self, actions: Sequence[Change]) -> JobResult:
        """A worker thread: one executor run over the job's actions (recovery of their intents, the
        work, and for the batch of other actions one look at ingests), with a reporter of its own.
        An upload's transcoding is followed by the loop's polls."""
        reporter = DaemonReporter(self.metrics)
        uploads_only = all(c.action in _UPLOAD_ACTIONS for c in actions)
        options = dataclasses.replace(self.exec_options, follow=False) if uploads_only else None
        try:
            result = self._executor(reporter, options).run(Plan(actions=tuple(actions)))
        except VodsyncError as err:  # the state file, or VOD refused the credentials
            return JobResult(reporter.final_outcomes(), error=err.message)
        return JobResult(reporter.final_outcomes(), tuple(result.stopped), elsewhere=tuple(result.elsewhere))

    def _collect(self) -> None:
        """The loop thread takes the finished jobs' outcomes: backoff, drop files, and each pass whose
        last job this was is finished (metrics, /healthz, the summary line)."""
        finished = self.pool.finished()
        for done in finished:
            report: PassReport = done.job.origin
            result = done.result
            report.outcomes.update(result.outcomes)
            if result.stopped or done.not_started:
                report.interrupted = True
            if result.stopped:
                log.info("stopped mid-upload at a part boundary (%s); the next start resumes it",
                         ", ".join(result.stopped))
            if result.error is not None:
                report.error = report.error or result.error
                log.error("reconcile failed: %s", result.error)
            self._settle_backoff(result.outcomes)
            if result.elsewhere:
                with self._lock:
                    self._elsewhere.update(result.elsewhere)
                    self._elsewhere_at = self._elsewhere_at or self.clock() + self.settings.lease_seconds
            ran = set(done.claimed)
            self._finish_drops({n: c for n, c in report.candidates.items() if n in ran}, ran, report)
            with self._lock:
                again = self._waiting & set(done.job.names)
                self._waiting -= again
                self._replan |= again
            report.pending -= 1
            if not report.pending:
                self._after_pass(report, report.started)
        if finished:
            self._refresh_schedule()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every job handed to the pool has finished, and collect them (tests, --once)."""
        idle = self.pool.wait(timeout) and self.leadership.wait(timeout)
        self._collect()
        return idle

    def poll(self) -> dict[str, Outcome]:
        """Look at URL jobs and transcoding once (an empty plan: recovery + one follow)."""
        self._next_poll = None  # the schedule below sets the next one, if anything is still busy
        started = time.monotonic()
        self.reporter.begin()
        try:
            self._executor(self.reporter).run(Plan(actions=()))
        except VodsyncError as err:
            log.warning("could not poll VOD: %s", err.message)
        outcomes = self.reporter.final_outcomes()
        self._settle_backoff(outcomes)
        with self._lock:  # an ingest that delivered may have edits held back for it: plan those items
            self._replan.update(outcomes)
        self._refresh_schedule()
        self._publish(time.monotonic() - started, ok=True, error=None, record_reconcile=False)
        return outcomes

    # -- drop folders ---------------------------------------------------------------------

    def _scan_drop_folders(
        self, record_of: Callable[[str], Record | None], report: PassReport
    ) -> dict[str, tuple[DropFolder, DropCandidate]]:
        """Finished drop files to ingest now, by item name; settles the ones already ingested or failed."""
        candidates: dict[str, tuple[DropFolder, DropCandidate]] = {}
        wakes: list[float] = []
        for folder in self.folders:
            result = folder.scan()
            if result.wake_at is not None:
                wakes.append(result.wake_at)
            for failure in result.failed:
                dest = folder.finish_failure(failure)
                report.failed_files.append(str(failure.path))
                log.error("drop file %s moved to failed/: %s", failure.path, failure.reason,
                          extra={"file": str(failure.path), "moved_to": str(dest) if dest else None})
            for cand in result.ready:
                name = cand.item.name
                rec = record_of(name)
                if rec is not None and rec.status in _INGESTED:
                    # Same bytes as something ingested before (a rename, a restart, a second copy).
                    self._finish_success(folder, cand, rec, report, again=True)
                elif rec is not None and rec.status is RecordStatus.FAILED and rec.content_hash and rec.remote_id:
                    # Uploaded, then VOD failed it (transcoding): nothing to retry from here.
                    self._finish_failure(folder, cand, rec.last_error or "VOD failed the media", report)
                elif name not in candidates:  # same bytes in two folders: the first is ingested now,
                    candidates[name] = (folder, cand)  # the other is settled as "already" next pass
        self._drop_wake = min(wakes) if wakes else None
        return candidates

    def _finish_drops(
        self, candidates: dict[str, tuple[DropFolder, DropCandidate]], ran: set[str], report: PassReport
    ) -> None:
        for name, (folder, cand) in candidates.items():
            if name not in ran:
                continue  # waiting for its backoff
            rec = self.store.get(name)
            if rec is None:
                continue
            outcome = report.outcomes.get(name)
            if rec.status in _INGESTED:
                self._finish_success(folder, cand, rec, report, again=False)
            elif outcome is not None and not outcome.ok and rec.attempts >= DROP_MAX_ATTEMPTS:
                why = f"failed {rec.attempts} times; last error: {rec.last_error or 'unknown'}"
                self._finish_failure(folder, cand, why, report)

    def _finish_success(
        self, folder: DropFolder, cand: DropCandidate, rec: Record, report: PassReport, *, again: bool
    ) -> None:
        moved = folder.finish_success(cand)
        report.ingested.append(str(cand.path))
        what = "already ingested as" if again else "ingested as"
        where = f"; moved to {moved[0]}" if moved else ("; deleted" if folder.settings.after == "delete" else "")
        log.info("drop file %s %s %s (%s)%s", cand.path, what, rec.remote_id, cand.item.name, where,
                 extra={"item": cand.item.name, "file": str(cand.path), "remote_id": rec.remote_id})

    def _finish_failure(self, folder: DropFolder, cand: DropCandidate, reason: str, report: PassReport) -> None:
        dest = folder.finish_failure(cand, reason)
        report.failed_files.append(str(cand.path))
        log.error("drop file %s moved to failed/: %s", cand.path, reason,
                  extra={"item": cand.item.name, "file": str(cand.path), "moved_to": str(dest) if dest else None})

    # -- backoff and bookkeeping -------------------------------------------------------------

    def _settle_backoff(self, outcomes: dict[str, Outcome]) -> None:
        """Persist when each failed item may be tried again; clear it for items that succeeded."""
        now = self.clock()
        for name, outcome in outcomes.items():
            rec = self.store.get(name)
            if rec is None:
                continue
            if not outcome.ok:
                # The executor counted the failure in the record (`Record.failed`, once per failure).
                attempts = max(1, rec.attempts)
                delay = self.backoff.delay(attempts, self.rng)
                self.store.put(rec.replace(attempts=attempts, next_attempt_at=now + delay))
                log.warning("%s: attempt %d failed; next try in %.0f s", name, attempts, delay,
                            extra={"item": name, "attempts": attempts, "retry_in": round(delay, 1)})
            elif not outcome.pending and (rec.next_attempt_at is not None or rec.attempts):
                self.store.put(rec.replace(attempts=0, next_attempt_at=None))

    def _refresh_schedule(self) -> None:
        now = self.clock()
        try:
            retries = [t for t in self.store.retry_times() if t > now]
            counts = self.store.status_counts()
        except StateError as err:  # the state cannot be read now: keep the schedule; the next pass retries
            log.warning("cannot read the state to schedule the next pass: %s", err.message)
            if err.retryable:
                self.health.state_reachable(err.message)
            return
        self._next_retry = min(retries) if retries else None
        self._counts = counts
        busy = any(self._counts.get(str(s)) for s in _ASYNC)
        # A pass does not put off a poll already due sooner: with passes closer together than the
        # poll interval (a short `interval_seconds`, a busy drop folder), transcoding was never looked at.
        if not busy:
            self._next_poll = None
        elif self._next_poll is None:  # `poll` clears it before it looks
            self._next_poll = now + self.async_poll
        self.metrics.set_items(self._counts)
        self.metrics.queue_depth.set(len(retries) + len(self.pool.in_flight()))

    def _after_pass(self, report: PassReport, started: float) -> None:
        self.passes += 1
        self.last_report = report
        self._refresh_schedule()
        failed = report.failed
        error = report.error or report.manifest_error
        if error is None and failed:
            error = f"{len(failed)} item(s) failed, e.g. {failed[0].name}: {failed[0].message}"
        ok = report.error is None and report.manifest_error is None and not failed and not report.interrupted
        self._publish(time.monotonic() - started, ok=ok, error=error, record_reconcile=True)
        if report.error is not None:  # "pass done: N action(s), 0 failed" would claim they ran
            log.warning("pass ended by the error above: %d action(s) were planned; the next pass tries again",
                        report.planned, extra={"duration": round(time.monotonic() - started, 3)})
        elif report.planned or report.ingested or report.failed_files or failed:
            log.info(
                "pass done: %d action(s), %d failed, %d deferred (backoff), %d drop file(s) ingested, %d failed",
                report.planned, len(failed), len(report.deferred), len(report.ingested), len(report.failed_files),
                extra={"duration": round(time.monotonic() - started, 3)},
            )

    def _publish(self, duration: float, *, ok: bool, error: str | None, record_reconcile: bool) -> None:
        if record_reconcile:
            self.metrics.reconciled(duration, ok=ok)
            self.health.reconciled(ok=ok, error=error)
        self.notifier.status(self._status_text())

    def _status_text(self) -> str:
        counts = self._counts
        parts = [f"{n} {s}" for s, n in sorted(counts.items())] or ["no items"]
        text = "items: " + ", ".join(parts)
        if self._reported_error:
            text += "; INVALID MANIFESTS skipped (see log)"
        return text

    # -- running as a service ---------------------------------------------------------------

    def run_once(self, *, sleep: Callable[[float], None] = time.sleep, rounds: int = 3) -> list[PassReport]:
        """`--once`: a pass, then (a few times at most) another when drop files waiting to settle are due.

        A drop file is stable only after two looks `stable_seconds` apart, so a
        single scan never takes anything; a file still growing is left for later.
        """
        reports = [self.reconcile()]
        self.join()
        for _ in range(rounds):
            if self._drop_wake is None or self.stopping.is_set():
                break
            sleep(max(0.0, self._drop_wake - self.clock()))
            with self._lock:
                self._drops_dirty = True
            reports.append(self.reconcile())
            self.join()
        return reports

    def restart_watcher(self) -> None:
        """Watch the manifests and drop folders (again: a reload may have changed them)."""
        if self.watcher is not None:
            self.watcher.stop()
        recursive, flat = self.watch_paths()
        self.watcher = ChangeWatcher(recursive, self.on_change, flat_paths=flat,
                                     debounce_seconds=WATCH_DEBOUNCE_SECONDS)
        self.watcher.start()

    def run_loop(self, on_exit: Callable[[], None] = lambda: None) -> None:
        """The loop thread: run what is due, then sleep until the next due time or an event."""
        try:
            while not self.stopping.is_set():
                self._wake.clear()  # before step(): an event during the pass makes the wait return at once
                self.step()
                if self.stopping.is_set():
                    break
                self._wake.wait(max(0.0, self.next_wake() - self.clock()))
        finally:
            try:
                self.pool.shutdown()  # running uploads stop at their next part (they share `stopping`)
                self._collect()  # their records and backoff are saved before the process exits
                self.leadership.wait(GC_STOP_WAIT)  # a gc under way finishes the removal it is in
            finally:
                on_exit()  # wakes the main thread

    def serve_forever(self, *, stop_timeout: float = STOP_TIMEOUT) -> int:
        """Signals, systemd notifications and the loop thread, until SIGTERM/SIGINT. Main thread only."""
        main_wake = threading.Event()
        stop_signal: list[int] = []

        def on_stop(signum: int, _frame: Any) -> None:
            stop_signal.append(signum)
            self.request_stop()
            main_wake.set()

        def on_hup(_signum: int, _frame: Any) -> None:
            self.request_reload()

        previous = {s: signal.signal(s, on_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
        planned = threading.Event()

        def first_plan() -> None:
            planned.set()
            main_wake.set()

        self.on_first_plan = first_plan
        loop = threading.Thread(target=self.run_loop, args=(main_wake.set,), name="vodsync-loop", daemon=True)
        try:
            self.restart_watcher()
            loop.start()
            ping = self.notifier.watchdog_interval()
            announced = False
            log.info("watching %s and %d drop folder(s); full reconcile every %.0f s",
                     self.settings.manifests, len(self.folders), self.settings.interval)
            while not self.stopping.is_set():
                if not announced and planned.is_set():
                    self.notifier.ready(self._status_text())
                    announced = True
                if not loop.is_alive():
                    log.error("the reconcile loop ended unexpectedly; exiting so the service manager restarts vodsync")
                    return 1
                # Signals and the loop thread set main_wake; otherwise wake only to feed the watchdog.
                main_wake.wait(ping)
                main_wake.clear()
                if ping:
                    self.notifier.watchdog()
            name = signal.Signals(stop_signal[0]).name if stop_signal else "stop"
            log.info("%s: stopping; running uploads stop at their next part", name)
            self.notifier.stopping("stopping: waiting for uploads to reach a checkpoint")
            loop.join(stop_timeout)
            if loop.is_alive():
                log.error("uploads did not reach a checkpoint within %.0f s; exiting anyway "
                          "(the state file is consistent; the next start resumes)", stop_timeout)
                logging.shutdown()
                self._close_quickly()
                os._exit(0)
            log.info("stopped; state saved")
            return 0
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _close_quickly(self) -> None:
        try:
            self.store.close()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


# ------------------------------------------------------------------ entry point


def serve(ctx: Context) -> int:
    """`vodsync watch`: run the daemon (or one pass with --once) for the CLI's resolved context."""
    args = ctx.args
    _apply_config_log_format(ctx)
    settings = LoopSettings.from_context(ctx)
    metrics = Metrics()
    health = Health(settings.interval)
    notifier = Notifier.from_env()
    server = MetricsServer.from_setting(settings.http, metrics, health) if settings.http else None
    with ctx.open_state() as store, ctx.cloud() as cloud_settings:
        state_namespace(store, ctx.config.namespace)  # recorded (or checked against the pin) before any pass
        client = vod_client(cloud_settings, store, observer=metrics.api_call)
        daemon = Daemon(settings, store, client, metrics=metrics, health=health, notifier=notifier,
                        exec_options=ctx.exec_options())
        # A new Context re-reads flags, environment and the config file, as at start.
        daemon.reread_settings = lambda: LoopSettings.from_context(type(ctx)(args))
        if getattr(args, "once", False):
            reports = daemon.run_once()
            bad = [r for r in reports if r.error or r.failed or r.manifest_error]
            return 1 if bad else 0
        if server is not None:
            server.start()
        try:
            return daemon.serve_forever()
        finally:
            if server is not None:
                server.stop()


def _apply_config_log_format(ctx: Context) -> None:
    """`daemon.log_format` from the config applies when the flag was left at auto."""
    wanted = ctx.config.daemon.log_format
    if getattr(ctx.args, "log_format", "auto") != "auto" or wanted == "auto":
        return
    from vodsync.logs import setup_logging

    level = str(getattr(ctx.args, "log_level", "info")).upper()
    setup_logging(getattr(logging, level, logging.INFO), wanted, sys.stderr)
