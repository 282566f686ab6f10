"""Many processes, one library: `vodsync apply` and `vodsync watch` processes sharing one
PostgreSQL state (a real server, tests/pgserver.py) and one emulator (issue 16's evidence).

Each process is a real `python -m vodsync` subprocess talking to the session's emulator over
HTTP and to PostgreSQL over its socket. Conditions are polled with deadlines (the emulator's
state, the state's rows, the logs); the only waits are for what is under test: the budget's
pacing, a lease's expiry after a SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from clikit import Workspace, mp4, workspace

from vodsync.emulator import Emulator
from vodsync.state.location import StateLocation

KiB = 1024


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Vodsync:
    """One `python -m vodsync ARGS` process; its stderr (JSON log lines) is collected by a thread."""

    def __init__(self, name: str, root: Path, emulator: Emulator, *args: str) -> None:
        self.name = name
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(ALIBABA_CLOUD_ACCESS_KEY_ID="emulator", ALIBABA_CLOUD_ACCESS_KEY_SECRET="emulator-secret",
                   PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "vodsync", *args, "--config", str(root / "vodsync.yaml"),
               "--endpoint", emulator.url]
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, dict[str, Any]]] = []  # (time.monotonic() read, log line)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = {"msg": line.rstrip()}
            self.lines.append((time.monotonic(), parsed))

    def said(self, fragment: str) -> list[float]:
        """When this process logged a message containing `fragment`."""
        return [t for t, line in list(self.lines) if fragment in str(line.get("msg", ""))]

    def log_text(self) -> str:
        return "\n".join(str(line.get("msg", line)) for _, line in self.lines[-60:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._reader.join(5)

    @property
    def pid(self) -> int:
        return self.proc.pid


@pytest.fixture
def processes() -> Iterator[list[Vodsync]]:
    started: list[Vodsync] = []
    yield started
    for p in started:
        p.kill()


def _config(ws: Workspace, url: str, extra: str = "") -> None:
    (ws.root / "vodsync.yaml").write_text(
        f"manifests: {ws.manifests}\nstate: {url}\nroots: [{ws.root}]\n{extra}")


def _lease_holders(url: str) -> dict[str, int]:
    """Item name -> pid of the process holding its lease now."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT name, holder FROM vodsync.leases WHERE expires_at > now()").fetchall()
    return {name: int(holder.split(":")[1]) for name, holder in rows}


def test_three_processes_share_one_api_budget(
    emulator: Emulator, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: list[Vodsync]
) -> None:
    count, rate = 60, 5
    with workspace(emulator, tmp_path, monkeypatch) as ws:
        for n in range(count):
            ws.file(f"media/clip-{n:02d}.mp4", mp4(300, bytes([48 + n % 64])))
        ws.manifest([{"name": f"clip-{n:02d}", "type": "video", "file": f"media/clip-{n:02d}.mp4",
                      "title": f"Clip {n}"} for n in range(count)])
        _config(ws, pg_url, f"api_limits: {{CreateUploadVideo: {rate}}}\nconcurrency: 4\n")
        runs = [Vodsync(f"apply-{i}", ws.root, emulator, "apply", "--yes", "--wait", "0", "--log-format", "json")
                for i in range(3)]
        processes.extend(runs)
        for run in runs:
            assert run.proc.wait(120) == 0, run.log_text()

        times = requests.get(f"{emulator.url}/_emulator/calls", params={"action": "CreateUploadVideo"},
                             timeout=10).json()
        assert len(times) == count  # one create per item: the three processes shared the work
        assert len(emulator.state()["videos"]) == count
        busiest = max(sum(1 for t in times if start <= t < start + 1) for start in times)
        assert busiest <= 2 * rate
        # No more than `rate` a second on average (less 0.2 s of jitter between pacing and arrival).
        assert times[-1] - times[0] >= (count - 1) / rate - 0.2
        with StateLocation(url=pg_url).open(readonly=True) as store:
            records = store.records()
        assert len(records) == count and all(r.remote_id for r in records.values())
