"""The daemon's work pool: a pass hands its work to `concurrency` worker threads and returns.

A pass plans, then submits `Job`s (one per upload, one for the pass's other
actions) and goes back to the loop, so a manifest edit, a drop file or a poll
is handled while a long upload runs. The pool keeps the names of every job
submitted and not finished (`in_flight`): the daemon leaves them out of later
plans, so no item is worked on by two workers and no in-flight item is created
a second time. A finished job waits in `finished()` until the loop collects it
(backoff, drop files, metrics happen on the loop thread).

`dispatch` is the one place a job's items are taken up: `claim` (default: all
of them) says which names this process may work on now, `release` gives them
back afterwards. A shared state's item leases plug in there.

On stop (`stopping` set), jobs not started are not started (their names are
reported as not started); running uploads stop at their next part boundary
(the executor shares the same event) and `shutdown` waits for them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from vodsync.engine.diff import Change
from vodsync.engine.execution import Outcome

log = logging.getLogger("vodsync.daemon")


@dataclass(frozen=True)
class Job:
    """One unit of work: one upload, or a batch of a pass's other actions."""

    actions: tuple[Change, ...]
    origin: Any = None  # what submitted it (the daemon's pass report), handed back when it finishes

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.actions)


@dataclass(frozen=True)
class JobResult:
    """What running a job's actions gave (the runner's answer)."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    stopped: tuple[str, ...] = ()  # uploads a stop cut short at a part boundary (resumed later)
    error: str | None = None  # the run as a whole ended with this error (state file, credentials)
    elsewhere: tuple[str, ...] = ()  # items another process held (a shared state): left to it


@dataclass(frozen=True)
class Finished:
    job: Job
    claimed: tuple[str, ...]  # the names worked on (all of them unless `claim` kept some back)
    result: JobResult
    not_started: tuple[str, ...] = ()  # a stop came first


class JobRunner(Protocol):
    def __call__(self, actions: Sequence[Change]) -> JobResult: ...


Claim = Callable[[Sequence[str]], set[str]]
Release = Callable[[Sequence[str]], None]


def claim_all(names: Sequence[str]) -> set[str]:
    return set(names)


def release_none(names: Sequence[str]) -> None:
    return None


class WorkPool:
    """Runs jobs on `workers` threads; see the module docstring."""

    def __init__(
        self,
        run: JobRunner,
        workers: int,
        *,
        stopping: threading.Event,
        claim: Claim = claim_all,
        release: Release = release_none,
        on_finished: Callable[[], None] = lambda: None,
    ) -> None:
        self._run = run
        self.stopping = stopping
        self.claim = claim
        self.release = release
        self._on_finished = on_finished
        self._threads = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="vodsync-worker")
        self._cond = threading.Condition()
        self._in_flight: dict[str, Job] = {}
        self._finished: list[Finished] = []
        self._jobs = 0  # submitted and not finished

    def in_flight(self) -> frozenset[str]:
        """Names of every item in a job submitted and not finished yet."""
        with self._cond:
            return frozenset(self._in_flight)

    def submit(self, job: Job) -> None:
        with self._cond:
            clash = [n for n in job.names if n in self._in_flight]
            if clash:  # the caller leaves in-flight names out; a second worker on an item is a bug
                raise ValueError(f"already in flight: {', '.join(clash)}")
            for name in job.names:
                self._in_flight[name] = job
            self._jobs += 1
        self._threads.submit(self._work, job)

    def dispatch(self, job: Job) -> Finished:
        """Take up one job: claim its items, run the claimed ones, release them. `claim` may keep
        names back; those are not run. (Item leases of a shared state are not taken here: the
        executor claims each item as a worker comes to it, `Executor._claim`.)"""
        if self.stopping.is_set():
            return Finished(job, (), JobResult(), not_started=job.names)
        claimed = self.claim(job.names)
        actions = tuple(c for c in job.actions if c.name in claimed)
        try:
            result = self._run(actions) if actions else JobResult()
        except Exception as err:  # noqa: BLE001 - a bug in one job must not kill the worker thread
            log.exception("a job of %s failed", ", ".join(job.names))
            result = JobResult(error=f"{type(err).__name__}: {err}")
        finally:
            self.release([c.name for c in actions])
        return Finished(job, tuple(c.name for c in actions), result)

    def _work(self, job: Job) -> None:
        try:
            done = self.dispatch(job)
        finally:
            with self._cond:
                for name in job.names:
                    if self._in_flight.get(name) is job:
                        del self._in_flight[name]
        with self._cond:
            self._finished.append(done)
            self._jobs -= 1
            self._cond.notify_all()
        self._on_finished()

    def finished(self) -> list[Finished]:
        """The jobs finished since the last call (the loop thread collects them)."""
        with self._cond:
            done, self._finished = self._finished, []
        return done

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._jobs > 0

    def wait(self, timeout: float | None = None) -> bool:
        """Until no job is submitted and unfinished; False if `timeout` came first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._jobs == 0, timeout)

    def wait_for(self, names: Sequence[str], timeout: float | None = None) -> bool:
        """Until none of `names` is in flight; False if `timeout` came first."""
        with self._cond:
            return self._cond.wait_for(lambda: not any(n in self._in_flight for n in names), timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """No new job starts after this (callers set `stopping` first); wait for the running ones."""
        finished = self.wait(timeout)
        self._threads.shutdown(wait=finished, cancel_futures=False)
        return finished
