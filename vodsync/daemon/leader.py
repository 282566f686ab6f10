"""The account-wide roles of one daemon among many: the interval drift pass, pruning and gc.

Daemons on many hosts may share one state (PostgreSQL). Each works on the items it claims,
but the roles that look at the whole account run on one of them at a time: the leader, the
holder of the state's advisory lock (`Store.is_leader`). When the leader dies, PostgreSQL
releases its lock with its connection, and the next daemon to ask becomes the leader. With a
SQLite state the one writer is always the leader.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vodsync.errors import VodsyncError
from vodsync.state.interface import Store

if TYPE_CHECKING:
    from vodsync.cloud.vod import VodClient

__all__ = ["Leadership"]

log = logging.getLogger("vodsync.daemon")


@dataclass
class Leadership:
    """Whether this daemon leads now, asked once per pass; and the leader's gc."""

    store: Store
    leading: bool = False
    gc_runs: int = 0  # how many times this daemon ran gc (its /metrics and the tests read it)
    _running: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self) -> bool:
        """Ask the state (a lost database connection means not leading: the roles wait)."""
        try:
            now = self.store.is_leader()
        except VodsyncError as err:
            log.warning("cannot tell whether this daemon leads (%s): the drift pass, pruning and gc wait",
                        err.message)
            now = False
        if now != self.leading and self.store.shared:
            log.info("this daemon %s the leader: the drift pass, pruning and gc %s here",
                     "is now" if now else "is no longer", "run" if now else "no longer run")
        self.leading = now
        return now

    def collect_garbage(self, client: VodClient, *, remove: bool) -> None:
        """Start the leader's gc after its drift pass, on a thread of its own: it reads the whole
        state and searches VOD (seconds at 100,000 items), and the loop must not keep an edit or a
        drop file waiting for it (bench/daemon_latency.py found a first edit 3 s late). One at a
        time: a gc still running when the next drift pass ends is not started again."""
        with self._lock:
            if self._running is not None and self._running.is_alive():
                return
            self._running = threading.Thread(target=self._collect, args=(client, remove), name="vodsync-gc",
                                             daemon=True)
            self._running.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a gc under way (tests; the daemon's stop); True when none is left running."""
        running = self._running
        if running is not None:
            running.join(timeout)
        return running is None or not running.is_alive()

    def _collect(self, client: VodClient, remove: bool) -> None:
        """Report what interrupted runs left behind, and remove it when the daemon prunes (the
        user asked for deletions)."""
        from vodsync.engine.gc import run_gc

        out = io.StringIO()
        try:
            run_gc(self.store, client, yes=remove, out=out)
        except VodsyncError as err:
            log.warning("gc failed: %s", err.message)
            return
        finally:
            self.gc_runs += 1
        for line in out.getvalue().splitlines():
            if line.strip():
                log.info("gc: %s", line.strip())
