"""Running the real `vodsync` executable on a pseudo-terminal, as a person at a terminal does.

`on_pty([...])` starts the venv's `vodsync` with stdin, stdout and stderr on a new pty (so
`isatty()` is true and rich draws colours and live bars), reads everything it writes on a
thread, and gives `expect(text)`, `interrupt()` (SIGINT, as Ctrl-C sends), `wait()` and the
output with the terminal's escape sequences stripped (`text`). `piped([...])` runs the same
executable with its output on pipes, for comparing the two.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from clirun import ACCOUNT_ENV

VODSYNC = str(Path(sys.executable).with_name("vodsync"))  # the console script of this environment
# CSI sequences (colours, cursor moves, erase), OSC sequences, and carriage returns.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>]|\r")
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


def strip_ansi(raw: str) -> str:
    return _ESCAPES.sub("", raw)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a user's shell gives vodsync: the emulator's account key, no proxies."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXIES}
    env.update(ACCOUNT_ENV)
    env.update({"TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"})
    env.pop("NO_COLOR", None)
    env.update(extra or {})
    return env


class PtyProcess:
    """One `vodsync` process on a pty of `cols` x `rows`."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
                 cols: int = 120, rows: int = 40) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen([VODSYNC, *argv], cwd=cwd, env=cli_env(env), stdin=slave, stdout=slave,
                                     stderr=slave, close_fds=True)
        os.close(slave)
        self._master = master
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._grew = threading.Condition(self._lock)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every writer closed its side (the process exited)
                chunk = b""
            with self._grew:
                if not chunk:
                    self._closed = True
                    self._grew.notify_all()
                    return
                self._raw += chunk
                self._grew.notify_all()

    _closed = False

    @property
    def text(self) -> str:
        """Everything written so far, escape sequences stripped."""
        with self._lock:
            return strip_ansi(self._raw.decode("utf-8", "replace"))

    def expect(self, needle: str, timeout: float = 10.0) -> str:
        """Wait until `needle` appears in the output; returns the output. Fails after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._grew:
            while True:
                text = strip_ansi(self._raw.decode("utf-8", "replace"))
                if needle in text:
                    return text
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise AssertionError(f"{needle!r} not seen within {timeout} s; output so far:\n{text[-3000:]}")
                self._grew.wait(left)

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the process."""
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)
            os.close(self._master)
        return code


def on_pty(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> PtyProcess:
    return PtyProcess(argv, cwd, env)


def run_on_pty(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
               timeout: float = 60.0) -> tuple[int, str]:
    """Run to the end on a pty: (exit code, output with escapes stripped)."""
    p = PtyProcess(argv, cwd, env)
    code = p.wait(timeout)
    return code, p.text


def piped(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
          timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run with stdin from /dev/null and output on pipes, as in a script or CI."""
    return subprocess.run([VODSYNC, *argv], cwd=cwd, env=cli_env(env), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)
