"""`vodsync watch` as a real process against the emulator: the evidence of issue 4.

Each test starts the daemon with `python -m vodsync watch`, pointed at the
session's in-process emulator with `--endpoint`, and reads its JSON log lines
from stderr. Conditions are polled with deadlines (the emulator's state, the
log, the file system); nothing waits a fixed time to be correct.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vodsync.emulator import Emulator
from vodsync.state.store import RecordStatus, StateStore

MiB = 1024 * 1024


def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class DaemonProcess:
    """One `vodsync watch` process; its stderr JSON lines are collected by a thread."""

    def __init__(self, project: Path, emulator: Emulator, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        full_env.update(
            ALIBABA_CLOUD_ACCESS_KEY_ID="emulator", ALIBABA_CLOUD_ACCESS_KEY_SECRET="emulator-secret",
            PYTHONUNBUFFERED="1", **(env or {}),
        )
        cmd = [sys.executable, "-m", "vodsync", "watch", "--config", str(project / "vodsync.yaml"),
               "--endpoint", emulator.url, "--log-format", "json", *args]
        self.proc = subprocess.Popen(cmd, cwd=project, env=full_env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.raw.append(line)
                try:
                    self.lines.append(json.loads(line))
                except ValueError:
                    self.lines.append({"msg": line.rstrip()})
                self._cond.notify_all()

    def wait_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError("log line not seen; stderr was:\n" + "".join(self.raw[-40:]))
                self._cond.wait(min(remaining, 0.5))

    def wait_msg(self, fragment: str, timeout: float = 15.0) -> dict[str, Any]:
        return self.wait_log(lambda line: fragment in line.get("msg", ""), timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for d in ("manifests", "drop", "media"):
        (tmp_path / d).mkdir()
    (tmp_path / "vodsync.yaml").write_text(
        f"manifests: {tmp_path / 'manifests'}\n"
        f"state: {tmp_path / 'state' / 'state.db'}\n"
        f"roots: [{tmp_path}]\n"
        "drop_folders:\n"
        f"  - path: {tmp_path / 'drop'}\n"
        "    stable_seconds: 0.5\n"
        "    after: move\n"
        "    defaults: {tags: [dropped]}\n"
    )
    return tmp_path


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        d.kill()


def start(daemons: list[DaemonProcess], project: Path, emulator: Emulator, *args: str, **kw: Any) -> DaemonProcess:
    d = DaemonProcess(project, emulator, *args, **kw)
    daemons.append(d)
    return d


def write_manifest(project: Path, name: str, body: str) -> None:
    # Write beside, then rename: an editor's save, and never a half file for the watcher.
    tmp = project / "manifests" / f".{name}.tmp"
    tmp.write_text(body)
    os.replace(tmp, project / "manifests" / name)


def video_manifest(name: str, file: str, title: str) -> str:
    return f"media:\n  - name: {name}\n    type: video\n    file: ../media/{file}\n    title: {title}\n"


def records(project: Path) -> dict:
    with StateStore.open(project / "state" / "state.db", readonly=True) as store:
        return store.records()


# ---------------------------------------------------------------------------- evidence


def test_slowly_written_drop_file_is_uploaded_once_when_complete_with_its_sidecar(
    project: Path, emulator: Emulator, daemons: list
) -> None:
    d = start(daemons, project, emulator)
    d.wait_msg("watching")
    drop = project / "drop"
    (drop / "interview.yaml").write_text("title: Interview with the mayor\ntags: [city]\n")
    chunk = os.urandom(64 * 1024)
    with open(drop / "interview.mp4", "wb") as f:
        for _ in range(12):  # ~2.4 s of writing, never idle for the 0.5 s window
            f.write(chunk)
            f.flush()
            time.sleep(0.2)  # the slow writer itself, not a wait for the daemon
            assert emulator.calls().get("CreateUploadVideo", 0) == 0, "taken before it was complete"
    size = 12 * len(chunk)

    line = d.wait_msg("drop file")
    assert "ingested as" in line["msg"]
    [video] = emulator.state()["videos"]
    assert video["Title"] == "Interview with the mayor"
    assert sorted(video["Tags"].split(",")) == ["city", "dropped"]  # sidecar tags + folder defaults
    assert eventually(lambda: any(o["size"] == size for o in emulator.state()["objects"]), what="the object")
    assert (drop / "done" / "interview.mp4").stat().st_size == size
    assert (drop / "done" / "interview.yaml").is_file()

    # The move into done/ wakes the daemon again; it must not upload anything a second time.
    d.wait_msg("pass done")
    assert emulator.calls()["CreateUploadVideo"] == 1 and len(emulator.state()["videos"]) == 1
    rc, _ = d.stop()
    assert rc == 0


def test_manifest_edit_is_applied_within_seconds_and_a_broken_edit_leaves_everything(
    project: Path, emulator: Emulator, daemons: list
) -> None:
    (project / "media" / "a.mp4").write_bytes(b"a" * 50_000)
    (project / "media" / "b.mp4").write_bytes(b"b" * 50_000)
    write_manifest(project, "a.yaml", video_manifest("a", "a.mp4", "First title"))
    write_manifest(project, "b.yaml", video_manifest("b", "b.mp4", "B"))
    d = start(daemons, project, emulator, "--prune")
    eventually(lambda: len(emulator.state()["videos"]) == 2, what="both videos")

    edited = time.monotonic()
    write_manifest(project, "a.yaml", video_manifest("a", "a.mp4", "Second title"))
    eventually(lambda: any(v["Title"] == "Second title" for v in emulator.state()["videos"]), timeout=10,
               what="the edited title")
    assert time.monotonic() - edited < 5  # watchdog + debounce, not the 10-minute interval

    before = records(project)
    write_manifest(project, "b.yaml", "media:\n  - name: b\n    type: video\n    file: [unclosed\n")
    line = d.wait_log(lambda r: str(r.get("level")).lower() == "error" and "invalid manifest" in r.get("msg", ""))
    assert line["file"] == "manifests/b.yaml" and line["line"]  # from the daemon's working directory
    write_manifest(project, "a.yaml", video_manifest("a", "a.mp4", "Third title"))  # a later valid edit
    eventually(lambda: any(v["Title"] == "Third title" for v in emulator.state()["videos"]), timeout=10,
               what="an edit of a valid file while another is broken")
    assert emulator.calls().get("DeleteVideo", 0) == 0, "--prune must not act on a broken manifest's items"
    assert len(emulator.state()["videos"]) == 2
    after = records(project)
    assert set(after) == {"a", "b"} and after["b"] == before["b"]
    rc, _ = d.stop()
    assert rc == 0


def test_sigterm_mid_upload_exits_cleanly_and_a_restart_finishes_without_a_second_video(
    project: Path, emulator: Emulator, daemons: list
) -> None:
    parts = 10
    (project / "media" / "big.mp4").write_bytes(os.urandom(1024) * (parts * 8 * 1024))  # 10 parts of 8 MiB
    write_manifest(project, "m.yaml", video_manifest("big", "big.mp4", "Big"))
    emulator.set_faults([{"match": "oss:PUT", "error": "slow", "delay_ms": 1000, "rate": 1.0}])
    # One item at a time: its 4 part threads (a lone file would get all 16 streams, every part at once).
    with open(project / "vodsync.yaml", "a") as f:
        f.write("concurrency: 1\n")
    d = start(daemons, project, emulator, "--part-size", str(8 * MiB))

    def parts_done() -> int:
        return sum(u["parts"] for u in emulator.state()["multipart_uploads"])

    eventually(lambda: parts_done() >= 1, timeout=20, what="the first part")
    rc, took = d.stop(signal.SIGTERM)
    assert rc == 0 and took < 30
    d.wait_msg("stopped mid-upload")
    assert records(project)["big"].status is RecordStatus.UPLOADING
    sent_first = emulator.calls()["oss:PUT"]
    assert 1 <= parts_done() < parts and sent_first < parts

    emulator.set_faults([])
    d2 = start(daemons, project, emulator)  # the default part size: the checkpoint's 8 MiB wins
    eventually(lambda: records(project)["big"].status is RecordStatus.READY, timeout=30, what="READY")
    state = emulator.state()
    assert len(state["videos"]) == 1 and emulator.calls()["CreateUploadVideo"] == 1
    assert emulator.calls()["oss:PUT"] - sent_first < parts  # only the missing parts were sent again
    assert [o["size"] for o in state["objects"]] == [parts * 8 * MiB]
    rc, _ = d2.stop()
    assert rc == 0


def test_sd_notify_healthz_metrics_and_sighup_as_a_real_service(
    project: Path, emulator: Emulator, daemons: list
) -> None:
    sock_path = Path("/tmp") / f"vodsync-notify-{uuid.uuid4().hex[:8]}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(15)
    messages: list[str] = []

    def receive_until(fragment: str) -> list[str]:
        while True:
            got = sock.recv(4096).decode().split("\n")
            messages.extend(got)
            if fragment in got:
                return got

    try:
        (project / "media" / "a.mp4").write_bytes(b"a" * 10_000)
        write_manifest(project, "m.yaml", video_manifest("a", "a.mp4", "A"))
        d = start(daemons, project, emulator, "--http", "127.0.0.1:0",
                  env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "600000"})  # ping every 0.3 s
        ready = receive_until("READY=1")
        assert any(m.startswith("STATUS=") for m in ready)
        receive_until("WATCHDOG=1")

        url = d.wait_msg("serving /healthz")["msg"].rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        eventually(lambda: records(project).get("a") and records(project)["a"].status is RecordStatus.READY,
                   what="the item")
        with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
            assert resp.status == 200 and json.load(resp)["status"] == "ok"

        def metrics() -> str:
            with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
                return resp.read().decode()

        def ready_counted() -> str | None:
            text = metrics()
            return text if 'vodsync_items{status="ready"} 1.0' in text else None

        text = eventually(ready_counted, what="items by status")
        for name in ("vodsync_uploads_total 1.0", 'vodsync_api_calls_total{action="CreateUploadVideo"} 1.0',
                     "vodsync_reconcile_duration_seconds_count", "vodsync_queue_depth",
                     "vodsync_last_success_timestamp_seconds"):
            assert name in text

        # SIGHUP: the config is read again (a second drop folder appears), RELOADING=1 then READY=1.
        (project / "drop2").mkdir()
        with open(project / "vodsync.yaml", "a") as f:
            f.write(f"  - path: {project / 'drop2'}\n    stable_seconds: 0.5\n")
        d.proc.send_signal(signal.SIGHUP)
        receive_until("READY=1")
        assert "RELOADING=1" in messages
        d.wait_msg("config reloaded: 2 drop folder(s)")

        rc, _ = d.stop()
        assert rc == 0
        receive_until("STOPPING=1")
    finally:
        sock.close()
        sock_path.unlink(missing_ok=True)
