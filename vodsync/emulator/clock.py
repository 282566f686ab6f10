"""The emulator's clock: wall time plus an offset that `/_emulator/advance` moves.

Every time-dependent rule (status transitions, STS expiry, nonce windows) reads
`Clock.now()`, so tests move time forward instead of sleeping.
"""

from __future__ import annotations

import threading
import time


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
        with self._lock:
            self._offset += seconds
            return self._offset
