"""Shared helpers for the benchmarks in bench/: an emulator in its own process, test files,
whole-process timing with peak RSS, and the machine's description.

Benchmarks are not tests: they print figures and ratios, and exit 0 whether or not a
target is met (the last line of each says which were met).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
GiB = 1024 * MiB
ACCESS_KEY_ID, ACCESS_KEY_SECRET = "emulator", "emulator-secret"


def vodsync_cmd(*args: str) -> list[str]:
    return [PYTHON, "-m", "vodsync", *args]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no proxies, the emulator's account key."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(
        ALIBABA_CLOUD_ACCESS_KEY_ID=ACCESS_KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=ACCESS_KEY_SECRET,
        PYTHONUNBUFFERED="1",
    )
    env.pop("ALIBABA_CLOUD_SECURITY_TOKEN", None)
    env.update(extra)
    return env


# ------------------------------------------------------------------ processes


@dataclass(frozen=True)
class ProcResult:
    returncode: int
    seconds: float  # wall clock, start-up included
    cpu_seconds: float  # user + system of the process (children not included)
    max_rss: int  # bytes (peak resident set, VmHWM)
    stdout: str
    stderr: str


# Linux keeps the RSS high-water mark of the image a process exec()s from in its ru_maxrss, so a
# child forked from this (large) benchmark process would report at least our own size. A tiny
# launcher, started with almost nothing in it, forks the measured command and reports its wait4.
_LAUNCHER = r"""
import json, os, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(report, "w") as f:
    json.dump([os.waitstatus_to_exitcode(status), seconds, ru.ru_utime + ru.ru_stime, ru.ru_maxrss], f)
"""


def run_process(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                timeout: float = 1800) -> ProcResult:
    """Run `cmd` to completion: wall time (from fork to exit, start-up included), CPU time and
    peak RSS (ru_maxrss = VmHWM) of exactly that process, measured by a small launcher."""
    with tempfile.TemporaryDirectory(prefix="vodsync-bench-run-") as tmp:
        out_path, err_path, report = Path(tmp, "out"), Path(tmp, "err"), Path(tmp, "report.json")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen([PYTHON, "-S", "-c", _LAUNCHER, str(report), *cmd], stdout=out, stderr=err,
                                    env=env if env is not None else clean_env(), cwd=cwd, start_new_session=True)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if report.exists():
            code, seconds, cpu, maxrss_kib = json.loads(report.read_text())
        else:
            code, seconds, cpu, maxrss_kib = -9, float(timeout), 0.0, 0
        return ProcResult(code, seconds, cpu, maxrss_kib * 1024, out_path.read_text(errors="replace"),
                          err_path.read_text(errors="replace"))


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a running process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# ------------------------------------------------------------------ emulator


class EmulatorProcess:
    """`vodsync emulator` in its own process (its own GIL), data dir on the same disk as the files."""

    def __init__(self, data_dir: Path, *, transcode_seconds: float = 0, url_job_seconds: float = 0,
                 etags: str = "md5") -> None:
        self.data_dir = data_dir
        self.transcode_seconds = transcode_seconds
        self.url_job_seconds = url_job_seconds
        self.etags = etags
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> EmulatorProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            vodsync_cmd("emulator", "--port", "0", "--data-dir", str(self.data_dir),
                        "--transcode-seconds", str(self.transcode_seconds),
                        "--url-job-seconds", str(self.url_job_seconds), "--etags", self.etags),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=clean_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = match.group(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def control(self, name: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/_emulator/{name}", data=data,
                                     method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=120) as resp:
            return json.loads(resp.read())

    def state(self) -> dict:
        return self.control("state")

    def calls(self) -> dict[str, int]:
        return dict(self.state().get("calls", {}))

    def reset(self) -> None:
        self.control("reset", {})

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)


def sdk_client(url: str):  # noqa: ANN201 - aliyunsdkcore is imported lazily
    from aliyunsdkcore.client import AcsClient

    host, port = url.removeprefix("http://").rsplit(":", 1)
    client = AcsClient(ACCESS_KEY_ID, ACCESS_KEY_SECRET, "cn-shanghai", port=int(port), timeout=60,
                       connect_timeout=10)
    client.add_endpoint("cn-shanghai", "vod", host)
    return client


# ------------------------------------------------------------------ files


@contextlib.contextmanager
def workdir(prefix: str, under: Path | None = None) -> Iterator[Path]:
    """A scratch directory (under /tmp, the emulator's data disk, unless `under`), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"vodsync-bench-{prefix}-", dir=under))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def service_dir(prefix: str, needed: int) -> Iterator[Path]:
    """Where the emulator keeps its data for a throughput run: in memory (/dev/shm) when it has
    room for `needed` bytes, else a scratch directory on disk; removed afterwards.

    The emulator stands in for a remote service: what it writes is the service's storage, not a
    cost of the client's machine. On disk its page-cache writes and their writeback compete with
    both contenders for this machine's two cores, and make the emulator the bottleneck sooner.
    """
    shm = Path("/dev/shm")
    with workdir(prefix, shm if shm.is_dir() and shutil.disk_usage(shm).free >= needed + GiB else None) as path:
        yield path


_BLOCK: bytes | None = None


def make_file(path: Path, size: int, *, sparse: bool = False) -> Path:
    """A file of `size` bytes: incompressible data (a random 16 MiB block, salted per block) or a hole."""
    global _BLOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        if sparse:
            f.truncate(size)
            return path
        if _BLOCK is None:
            _BLOCK = os.urandom(16 * MiB)
        left, n = size, 0
        while left > 0:
            chunk = _BLOCK[: min(left, len(_BLOCK))]
            f.write(n.to_bytes(8, "little") + chunk[8:] if len(chunk) >= 8 else chunk)
            left -= len(chunk)
            n += 1
    return path


def require_disk(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed + 2 * GiB:
        raise SystemExit(f"not enough disk at {path}: {free / GiB:.1f} GiB free, {needed / GiB:.1f} GiB needed")



# ------------------------------------------------------------------ reporting


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    return {"cpus": str(os.cpu_count()), "cpu": cpu, "memory": mem,
            "python": platform.python_version(), "kernel": platform.release()}


def print_machine() -> None:
    m = machine()
    print(f"machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory']} RAM, Python {m['python']}, Linux {m['kernel']}")


def verdict(label: str, ok: bool, detail: str) -> bool:
    print(f"  [{'MET' if ok else 'MISSED'}] {label}: {detail}")
    return ok



def write_yaml(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / MiB / seconds if seconds > 0 else float("inf")


# ------------------------------------------------------------------ a library in sync

_KINDS = ("video",) * 16 + ("image", "image", "attached", "url")  # 80% video, 10% image, 5% each


def make_library(root: Path, count: int, *, per_manifest: int = 1000, per_dir: int = 1000) -> tuple[Path, Path]:
    """`count` manifest items (mostly local files, a few URL ingests) and a state file in which
    every one of them is already in sync, as after a successful `vodsync apply`.

    The local files are tiny (a no-op plan stats them, never reads them). The state is written
    with vodsync's own store, from the items vodsync's own loader builds, so `vodsync plan`
    must find no change. Returns (manifest directory, state file).
    """
    manifests = root / "manifests"
    media = manifests / "media"
    lines: list[str] = []
    for i in range(count):
        kind = _KINDS[i % len(_KINDS)]
        sub = f"d{i // per_dir:04d}"
        name = f"lib/{sub}/item-{i:06d}"
        common = (f"    title: Item {i}\n    description: Episode {i} of the benchmark library\n"
                  f"    tags: [bench, s{i % 7}]\n")
        if kind == "url":
            entry = f"  - name: {name}\n    type: url\n    url: https://media.example.com/src/{i}.mp4\n" + common
        else:
            ext = {"video": "mp4", "image": "png", "attached": "vtt"}[kind]
            path = media / sub / f"item-{i:06d}.{ext}"
            if i % per_dir == 0:
                path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * (16 + i % 64))
            entry = f"  - name: {name}\n    type: {kind}\n    file: media/{sub}/{path.name}\n" + common
            if kind == "image":
                entry += "    image_type: default\n"
            elif kind == "attached":
                entry += "    business_type: subtitle\n"
        lines.append(entry)
        if len(lines) == per_manifest or i == count - 1:
            n = i // per_manifest
            write_yaml(manifests / f"part-{n:04d}.yaml",
                       "defaults:\n  cate_id: 100\n\nmedia:\n" + "".join(lines))
            lines = []
    state = root / "state" / "state.db"
    _write_synced_state(manifests, state)
    return manifests, state


def _write_synced_state(manifests: Path, state: Path) -> None:
    from vodsync.desired.loader import load_manifests
    from vodsync.state.store import Record, RecordStatus, StateStore

    items = load_manifests(manifests, roots=[manifests])
    records = []
    for n, item in enumerate(items):
        meta = {k: list(v) if isinstance(v, tuple) else v for k, v in item.metadata.items()}
        local = item.local
        records.append(Record(
            name=item.name, kind=str(item.kind), status=RecordStatus.READY, source=item.source,
            remote_id=f"{n:032x}", content_hash=f"{n:064x}" if local else None,
            size=local.size if local else None, mtime_ns=local.mtime_ns if local else None,
            metadata=meta, options=dict(item.options), remote_status="Normal", protect=item.protect,
            last_result="created",
        ))
    with StateStore.open(state) as store:
        for i in range(0, len(records), 10000):
            store.put_many(records[i : i + 10000])


FLOOR_SCRIPT = r"""
import os, sys, yaml
root = sys.argv[1]
n = 0
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for fname in sorted(filenames):
        if not fname.endswith((".yaml", ".yml")):
            continue
        with open(os.path.join(dirpath, fname), "rb") as f:
            data = yaml.load(f.read().decode("utf-8"), Loader=yaml.CSafeLoader)
        for item in data.get("media") or ():
            if "file" in item:
                os.stat(os.path.join(dirpath, item["file"]))
            n += 1
print(n)
"""


def floor_cmd(manifests: Path) -> list[str]:
    """The floor a no-op plan is compared with: parse the manifests (C loader) and stat the files."""
    return [PYTHON, "-c", FLOOR_SCRIPT, str(manifests)]
