"""The emulator's clock: wall time plus an offset that `/_emulator/advance` moves.

Every time-dependent rule (status transitions, STS expiry, nonce windows) reads
`Clock.now()`, so tests move time forward instead of sleeping.
"""

from __future__ import annotations

import math
import threading
import time

# Far beyond any credential lifetime or transcode a test moves past, far below what breaks float time.
MAX_ADVANCE_SECONDS = 100 * 365 * 86400.0


class Clock:
    def __init__(self, offset: float = 0.0) -> None:
        self._offset = offset
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the epoch, as the emulator sees them."""
        return time.time() + self._offset

    @property
    def offset(self) -> float:
        return self._offset

    def rewind(self) -> None:
        """Back to real time; only a reset of the whole emulator does this."""
        with self._lock:
            self._offset = 0.0

    def advance(self, seconds: float) -> float:
        """Move the clock forward by `seconds` (never backward); returns the new offset."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        if not math.isfinite(seconds) or seconds > MAX_ADVANCE_SECONDS:
            # NaN, inf or 1e308 would leave the clock (and every expiry compared with it) broken until a reset.
            raise ValueError(
                f"'seconds' must be a number from 0 to {MAX_ADVANCE_SECONDS:.0f} (about 100 years)"
            )
        with self._lock:
            if self._offset + seconds > MAX_ADVANCE_SECONDS:
                raise ValueError(f"the clock would run more than {MAX_ADVANCE_SECONDS:.0f} s ahead")
            self._offset += seconds
            return self._offset
