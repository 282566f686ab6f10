"""Per-item retry backoff for the daemon: how long a failing item waits before its next attempt.

The delay is persisted on the item's record (`next_attempt_at`, wall-clock
seconds) together with `attempts`, so a restart does not hammer an item that
was failing before it. This module is pure: the caller supplies the attempt
count and a random source.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class ItemBackoff:
    """Exponential with "equal jitter": attempt n waits about `base * 2**(n-1)`, capped at `cap`.

    Half of each step is fixed and half random, so delays always grow while
    items that failed together (a VOD outage) spread out when they come back.
    """

    base: float = 30.0
    cap: float = 3600.0

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `attempts`-th consecutive failure (attempts >= 1)."""
        n = max(1, attempts)
        # 2**40 * 30 s is far beyond any cap; stop the exponent growing without bound.
        step = min(self.cap, self.base * 2 ** min(n - 1, 40))
        r = (rng or random).random()
        return step / 2 + r * step / 2
