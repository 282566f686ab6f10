"""The API budget: every VOD call takes a token of its operation first, so the account's QPS is kept.

VOD's limits are per account (`vodsync/api_limits.py`): every host and process that calls with
one account spends from the same allowance. Each operation has a token bucket, kept as GCRA
("virtual scheduling"): one number per operation, its *theoretical arrival time* (TAT), the time
at which the bucket would be full again. A call reserves the next slot and is told how long to
wait for it:

    tat  = max(tat, now) + 1 / rate
    wait = max(0, tat - burst / rate - now)

so `burst` calls may go at once after a quiet spell, and after that one every `1 / rate` s.
Waiting callers are spread out (each reserves its own slot; a reservation is never given back),
never released together. Throttling answers are still retried with backoff by `retry.py`; each
attempt is a call and takes its own token.

The store of TATs is a declared `TokenStore`: `LocalTokens` in one process, and a table in a
shared state for many processes and hosts, where `take` is one statement. For PostgreSQL, with
the server's clock as the one clock every host reads:

    CREATE TABLE IF NOT EXISTS api_budget (
        op  text PRIMARY KEY,
        tat double precision NOT NULL      -- seconds since the epoch, the server's clock
    );

    -- take(op, rate, burst) -> wait; %(op)s text, %(rate)s and %(burst)s float8
    WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now)
    INSERT INTO api_budget AS b (op, tat)
    SELECT %(op)s, clock.now + 1.0 / %(rate)s FROM clock
    ON CONFLICT (op) DO UPDATE
        SET tat = greatest(b.tat, (SELECT now FROM clock)) + 1.0 / %(rate)s
    RETURNING greatest(0.0, b.tat - %(burst)s / %(rate)s - (SELECT now FROM clock)) AS wait;

The row lock that ON CONFLICT DO UPDATE takes makes concurrent takes of one operation queue
up, each seeing the TAT the one before it wrote (READ COMMITTED re-reads the updated row); the
first take of an operation inserts it and waits 0 (burst >= 1). Run it in autocommit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from vodsync.api_limits import DOCUMENTED_QPS

__all__ = ["Budget", "Limit", "LocalTokens", "TokenStore"]

# A wait shorter than this is floating-point noise of an exact slot, not a wait.
_EPSILON = 1e-9


class TokenStore(Protocol):
    def take(self, op: str, rate: float, burst: float) -> float:
        """Reserve the next call of `op` in a bucket of `rate` tokens per second holding at most
        `burst`; return the seconds the caller must wait before making it (0.0: go now)."""
        ...


class LocalTokens:
    """The TATs of one process, in memory. Thread-safe; `clock` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, op: str, rate: float, burst: float) -> float:
        with self._lock:
            now = self._clock()
            tat = max(self._tat.get(op, now), now) + 1.0 / rate
            self._tat[op] = tat
        wait = tat - burst / rate - now
        return wait if wait > _EPSILON else 0.0


@dataclass(frozen=True)
class Limit:
    """`rate` calls per second; `burst` of them may go at once after a quiet spell."""

    rate: float
    burst: float = 1.0

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.burst >= 1:
            raise ValueError(f"a limit needs rate > 0 and burst >= 1, got {self.rate!r} and {self.burst!r}")


class Budget:
    """The limit of every VOD operation, and the wait before each call.

    Limits are the documented per-account ones (`DOCUMENTED_QPS`) with `overrides` (the config's
    `api_limits:`, calls per second) on top; an operation with neither is not paced. Each
    operation's burst is 1: calls are evenly spaced, so no one-second window of the service
    holds more than `rate` of them (rounded up).
    """

    def __init__(
        self,
        overrides: Mapping[str, float] | None = None,
        *,
        tokens: TokenStore | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        rates = {**DOCUMENTED_QPS, **(overrides or {})}
        self.limits: Mapping[str, Limit] = {op: Limit(float(rate)) for op, rate in rates.items()}
        self._tokens = tokens if tokens is not None else LocalTokens()
        self._sleep = sleep

    def acquire(self, op: str) -> float:
        """Wait until a call of `op` may go; returns the seconds waited."""
        limit = self.limits.get(op)
        if limit is None:
            return 0.0
        wait = self._tokens.take(op, limit.rate, limit.burst)
        if wait > 0:
            self._sleep(wait)
        return wait
