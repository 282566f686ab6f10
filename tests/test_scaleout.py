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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from clikit import PNG, VTT, Workspace, mp4, wait_until, workspace

from vodsync.emulator import Emulator
from vodsync.state.location import StateLocation
from vodsync.state.records import RecordStatus

KiB = 1024


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
        assert len(times) == count  # one create per item,
        assert sum(1 for run in runs if run.said(": created ")) >= 2  # made by more than one process
        assert len(emulator.state()["videos"]) == count
        busiest = max(sum(1 for t in times if start <= t < start + 1) for start in times)
        assert busiest <= 2 * rate
        # No more than `rate` a second on average (less 0.2 s of jitter between pacing and arrival).
        assert times[-1] - times[0] >= (count - 1) / rate - 0.2
        with StateLocation(url=pg_url).open(readonly=True) as store:
            records = store.records()
        assert len(records) == count and all(r.remote_id for r in records.values())


def _library(ws: Workspace) -> list[dict[str, Any]]:
    """33 small items of every kind (videos, images, attached media, URL ingests, registrations)."""
    items: list[dict[str, Any]] = []
    for n in range(20):
        ws.file(f"media/v{n:02d}.mp4", mp4(2 * KiB, bytes([65 + n])))
        items.append({"name": f"video-{n:02d}", "type": "video", "file": f"media/v{n:02d}.mp4", "title": f"Video {n}"})
    for n in range(4):
        ws.file(f"media/i{n}.png", PNG + bytes([n]))
        items.append({"name": f"image-{n}", "type": "image", "file": f"media/i{n}.png", "title": f"Image {n}"})
    for n in range(3):
        ws.file(f"media/s{n}.vtt", VTT + bytes([48 + n]))
        items.append({"name": f"subs-{n}", "type": "attached", "file": f"media/s{n}.vtt",
                      "business_type": "subtitle", "title": f"Subs {n}"})
    for n in range(3):
        items.append({"name": f"url-{n}", "type": "url", "url": ws.url(f"/src/u{n}.mp4", mp4(3 * KiB, b"u")),
                      "title": f"Url {n}"})
    for n in range(3):
        items.append({"name": f"reg-{n}", "type": "register", "title": f"Reg {n}",
                      "file_url": ws.seed_object(f"archive/r{n}.mp4", mp4(2 * KiB, b"r"))})
    return items


def test_daemons_and_an_apply_share_one_library_through_kills(
    emulator: Emulator, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: list[Vodsync]
) -> None:
    parts, part = 16, 256 * KiB
    with workspace(emulator, tmp_path, monkeypatch) as ws:
        ws.file("media/big.mp4", os.urandom(parts * part))
        big = {"name": "big", "type": "video", "file": "media/big.mp4", "title": "Big"}
        ws.manifest([big], name="big.yaml")
        _config(ws, pg_url, "lease_seconds: 2\nconcurrency: 2\nprune: true\ndaemon: {interval_seconds: 2}\n")
        # Parts arrive like one slow WAN stream each (~5 s a part); the small files are not held up.
        emulator.set_faults([{"match": "oss:PUT", "error": "slow", "bytes_per_second": 50_000}])
        watch = ("watch", "--log-format", "json", "--part-size", str(part), "--multipart-threshold", str(part))

        def start(name: str, *args: str) -> Vodsync:
            p = Vodsync(name, ws.root, emulator, *args)
            processes.append(p)
            return p

        def big_uploads() -> list[dict[str, Any]]:
            return [u for u in emulator.state()["multipart_uploads"] if u["key"].endswith(".mp4") and u["parts"]]

        d1 = start("d1", *watch)
        wait_until(lambda: d1.said("is now the leader"), timeout=30, what="d1 to lead")
        first = wait_until(big_uploads, timeout=30, what="the big upload's first part")[0]
        assert _lease_holders(pg_url).get("big") == d1.pid

        ws.manifest(_library(ws))  # the rest of the library, while d1 uploads
        d2 = start("d2", *watch)
        applying = start("apply", "apply", "--yes", "--wait", "0", "--log-format", "json",
                         "--part-size", str(part), "--multipart-threshold", str(part))
        wait_until(lambda: d2.said("watching "), timeout=30, what="d2 to start")

        # SIGKILL d1 in the middle of the multipart upload, while it leads.
        assert 0 < next(u["parts"] for u in big_uploads() if u["upload_id"] == first["upload_id"]) < parts
        d1.kill()
        killed_1 = time.monotonic()

        # Its leases expire; a survivor resumes the same multipart upload (no second one is started).
        seen_ids: set[str] = set()

        def resumed() -> bool:
            ups = big_uploads()
            seen_ids.update(u["upload_id"] for u in ups)
            return any(u["upload_id"] == first["upload_id"] and u["parts"] > first["parts"] for u in ups) or (
                not ups and _status(pg_url, "big") in (RecordStatus.PROCESSING, RecordStatus.READY))

        wait_until(resumed, timeout=45, what="the big upload to be resumed")
        wait_until(lambda: d2.said("is now the leader"), timeout=30, what="d2 to lead after d1 died")

        # A restarted host joins; then the leader (d2) is SIGKILLed in its turn.
        d3 = start("d3", *watch)
        wait_until(lambda: d3.said("watching "), timeout=30, what="d3 to start")  # its passes may be silent
        d2.kill()
        killed_2 = time.monotonic()
        wait_until(lambda: d3.said("is now the leader"), timeout=30, what="d3 to lead after d2 died")
        assert applying.proc.wait(90) == 0, applying.log_text()

        names = [i["name"] for i in _library(ws)] + ["big"]
        wait_until(lambda: all(_status(pg_url, n) is RecordStatus.READY for n in names), timeout=90,
                   what="every item ready")

        vod = emulator.state()
        titles = [m["Title"] for kind in ("videos", "images", "attached") for m in vod[kind]]
        assert sorted(titles) == sorted({*titles}) and len(titles) == len(names)  # exactly one media per item
        assert not [m for kind in ("videos", "images", "attached") for m in vod[kind] if m["Status"] == "Uploading"]
        assert emulator.calls()["CreateUploadVideo"] == 21
        assert seen_ids <= {first["upload_id"]}  # resumed, not restarted
        # One leader at a time: each took over only after the one before it died.
        lead_1, lead_2, lead_3 = d1.said("is now the leader"), d2.said("is now the leader"), d3.said("is now the leader")
        assert len(lead_1) == 1 and all(t > killed_1 for t in lead_2) and all(t > killed_2 for t in lead_3)
        # gc (and the drift pass) ran on the leader only.
        for proc, since in ((d1, lead_1[0]), (d2, lead_2[0]), (d3, lead_3[0])):
            assert all(t >= since for t in proc.said("gc:")), proc.name
        assert d3.said("gc:")
        for p in processes:
            p.kill()
        emulator.set_faults([])


def _status(url: str, name: str) -> RecordStatus | None:
    with StateLocation(url=url).open(readonly=True) as store:
        rec = store.get(name)
    return None if rec is None else rec.status


def _healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        reply = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except requests.ConnectionError:
        return 0, {}
    return reply.status_code, reply.json()


def _cut(url: str, dbname: str, *, off: bool) -> None:
    """Make the database unreachable (new connections refused, open ones dropped), or reachable again."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {"false" if off else "true"}')
        if off:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))


def test_a_daemon_says_in_healthz_when_postgresql_is_unreachable_and_carries_on_after(
    emulator: Emulator, pg_url: str, postgres_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    processes: list[Vodsync],
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dbname = pg_url.split("?")[0].rsplit("/", 1)[1]
    with workspace(emulator, tmp_path, monkeypatch) as ws:
        clips = []
        for n in range(3):
            ws.file(f"media/c{n}.mp4", mp4(2 * KiB, bytes([70 + n])))
            clips.append({"name": f"clip-{n}", "type": "video", "file": f"media/c{n}.mp4", "title": f"Clip {n}"})
        ws.manifest(clips[:2])
        _config(ws, pg_url, f"daemon: {{interval_seconds: 1, http: '127.0.0.1:{port}'}}\n")
        d = Vodsync("d", ws.root, emulator, "watch", "--log-format", "json")
        processes.append(d)
        wait_until(lambda: all(_status(pg_url, c["name"]) is RecordStatus.READY for c in clips[:2]),
                   timeout=30, what="the first two clips")
        code, body = _healthz(port)
        assert code == 200 and body["state"] == "reachable"

        _cut(postgres_server, dbname, off=True)
        ws.manifest(clips)  # a new clip while the state cannot be reached
        code, body = wait_until(lambda: (h := _healthz(port))[0] == 503 and h, timeout=30, what="/healthz to say unhealthy")
        assert body["state"] == "unreachable" and "cannot be reached" in body["reason"], (body, d.log_text())
        assert emulator.calls()["CreateUploadVideo"] == 2  # nothing is started without the state

        _cut(postgres_server, dbname, off=False)
        wait_until(lambda: _healthz(port)[0] == 200, timeout=30, what="/healthz to recover")
        wait_until(lambda: _status(pg_url, "clip-2") is RecordStatus.READY, timeout=30, what="the new clip")
        assert emulator.calls()["CreateUploadVideo"] == 3 and len(emulator.state()["videos"]) == 3
        d.kill()


def test_an_apply_reports_only_what_it_worked_on_not_what_it_left_to_another_process(
    emulator: Emulator, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clirun import run_cli

    from vodsync.state.records import Record

    with workspace(emulator, tmp_path, monkeypatch) as ws:
        ws.file("media/a.mp4", mp4(2 * KiB, b"a"))
        ws.file("media/b.mp4", mp4(2 * KiB, b"b"))
        ws.manifest([{"name": "a", "type": "video", "file": "media/a.mp4", "title": "A"},
                     {"name": "b", "type": "video", "file": "media/b.mp4", "title": "B"}])
        with StateLocation(url=pg_url).open() as other:  # another host, transcoding `b` right now
            assert other.claim(["b"]) == {"b"}
            other.put(Record("b", "video", RecordStatus.PROCESSING, str(ws.manifests / "media/b.mp4"),
                             remote_id="v-elsewhere"))
            run = run_cli(["apply", "-f", str(ws.manifests), "--state", pg_url, "--endpoint", emulator.url,
                           "--yes", "--wait", "5"])
        assert run.code == 0, run
        assert "1 item(s) succeeded, 0 failed, 1 left to another process" in run.out
        assert "still ingesting or transcoding" not in run.out  # `b` is the other host's to follow
        assert emulator.calls()["CreateUploadVideo"] == 1
