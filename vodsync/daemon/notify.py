"""systemd's notify protocol (sd_notify) without a dependency.

Owns telling the service manager that the daemon is ready, reloading,
stopping, alive (watchdog keep-alive) and what it is doing (STATUS=). The
protocol is one datagram of `KEY=value` lines to the AF_UNIX socket named by
`NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). Outside
systemd the variable is unset and every call is a no-op, so callers never
need to check.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to one socket address, or does nothing when there is none."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for `NOTIFY_SOCKET` / `WATCHDOG_USEC` (ignored if `WATCHDOG_PID` names another process)."""
        env = os.environ if env is None else env
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        if raw.isdigit() and int(raw) > 0 and (not watchdog_pid or watchdog_pid == str(os.getpid())):
            usec = int(raw)
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=usec)

    def watchdog_interval(self) -> float | None:
        """Seconds between `watchdog()` pings: half of `WatchdogSec=`, as sd_watchdog_enabled advises."""
        return self.watchdog_usec / 2_000_000 if self.watchdog_usec else None

    # -- the messages ------------------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *self._status(status))

    def reloading(self, status: str | None = None) -> bool:
        # MONOTONIC_USEC lets systemd (>= 253, Type=notify-reload) tell this reload from an older one.
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", *self._status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *self._status(status))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(*self._status(text))

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        # A newline would start another assignment (STATUS=x\nREADY=1): keep the status one line.
        clean = " ".join(text.split())
        return (f"STATUS={clean[:512]}",)

    def send(self, *assignments: str) -> bool:
        """Send one datagram; True if it was sent. Failures are logged, never raised: systemd is optional."""
        if self.address is None or not assignments:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        payload = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall(payload)
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True
