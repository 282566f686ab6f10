"""A person at a terminal (issue 11): the real `vodsync` executable on a pseudo-terminal.

- the README's first command exits 0 with no traceback, and every item is recorded ready;
- `plan`, `apply`, `status`, `gc` and `watch --once` behave the same on a terminal and piped;
- Ctrl-C during a slowed multipart upload: the message at once, exit 130 within 5 s, the next
  run resumes with no duplicate; a second Ctrl-C exits at once.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ptykit import on_pty, piped, run_on_pty

from vodsync.emulator import Emulator
from vodsync.engine.plan import human_bytes

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
INTERRUPT = "Interrupt received: stopping at the next part boundary (Ctrl-C again to stop now)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_checkout(root: Path) -> tuple[Path, int]:
    """The repository's example manifests in a git checkout of their own, and a free port for
    their embedded emulator (9090 may be a developer's own emulator's; the demo's sources are
    OSS URLs the emulator answers on any port)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "manifests", root / "manifests")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root, free_port()


def status_of(cwd: Path) -> dict[str, dict]:
    run = piped(["status", "--json"], cwd)
    assert run.returncode == 0, run.stderr
    return {row["name"]: row for row in json.loads(run.stdout)}


Outcome = tuple[int, dict[str, str]]  # exit code, and every item's recorded status after the command


def _run(cwd: Path, argv: list[str], *, terminal: bool) -> tuple[Outcome, str]:
    """`vodsync ARGV` on a pty or piped: its outcome, and everything it printed."""
    if terminal:
        code, text = run_on_pty(argv, cwd)
    else:
        done = piped(argv, cwd)
        code, text = done.returncode, done.stdout + done.stderr
    return (code, {name: row["status"] for name, row in status_of(cwd).items()}), text


class Sides:
    """The demo in two checkouts, one driven on a terminal and one piped, command by command
    (both at once: each command starts an embedded emulator)."""

    def __init__(self, root: Path) -> None:
        self.sides = {terminal: demo_checkout(root / ("terminal" if terminal else "piped"))
                      for terminal in (True, False)}

    def both(self, *argv: str, emulator: bool = False) -> dict[bool, tuple[Outcome, str]]:
        def one(terminal: bool) -> tuple[Outcome, str]:
            cwd, port = self.sides[terminal]
            extra = ["--emulator", "--emulator-port", str(port)] if emulator else []
            return _run(cwd, [*argv, *extra], terminal=terminal)

        with ThreadPoolExecutor(2) as pool:
            results = dict(zip((True, False), pool.map(one, (True, False)), strict=True))
        for _, text in results.values():
            assert "Traceback" not in text, text
        return results


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sides, dict[bool, tuple[Outcome, str]]]:
    """The README's first command (`vodsync apply -f manifests --emulator --yes`) on both sides."""
    sides = Sides(tmp_path_factory.mktemp("demo"))
    return sides, sides.both("apply", "-f", "manifests", "--yes", emulator=True)


def test_readme_first_command_works_on_a_terminal(applied) -> None:
    _, results = applied
    (code, statuses), text = results[True]
    assert code == 0, text
    assert "Traceback" not in text and "Error" not in text, text
    assert "Apply complete: 6 item(s) succeeded, 0 failed" in text, text
    assert "waiting for " in text  # --wait says what it follows (transcodes, the URL ingest)
    assert len(statuses) == 6 and set(statuses.values()) == {"ready"}, statuses


def test_commands_behave_the_same_on_a_terminal_and_piped(applied) -> None:
    sides, results = applied
    assert results[True][0] == results[False][0]
    for argv, emulator in ((("plan", "-f", "manifests", "--detailed-exitcode"), False), (("status",), False),
                           (("gc",), True), (("watch", "-f", "manifests", "--once"), True)):
        results = sides.both(*argv, emulator=emulator)
        assert results[True][0] == results[False][0], (argv, results)
        assert results[True][0][0] == 0, (argv, results[True][1])


# ------------------------------------------------------------------------------ Ctrl-C


def _big_upload(root: Path, emulator: Emulator, size: int = 6 * MiB) -> tuple[Path, list[str]]:
    (root / "manifests" / "media").mkdir(parents=True)
    (root / "manifests" / "media" / "big.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + b"b" * (size - 12))
    (root / "manifests" / "library.yaml").write_text(
        "media:\n  - {name: big, type: video, file: media/big.mp4, title: Big}\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    # 24 parts of 256 KiB on 4 part threads: every part takes the slow fault's delay.
    return root, ["apply", "-f", "manifests", "--endpoint", emulator.url, "--yes", "--concurrency", "1",
                  "--multipart-threshold", str(MiB), "--part-size", str(256 * 1024), "--wait", "0"]


def _parts_in_oss(emulator: Emulator) -> int:
    return sum(u["parts"] for u in emulator.state()["multipart_uploads"])


def _until_parts_arrive(emulator: Emulator, timeout: float = 10.0) -> None:
    """Until OSS holds a first part: the upload is under way, its parts threads mid-part."""
    deadline = time.monotonic() + timeout
    while _parts_in_oss(emulator) == 0:
        assert time.monotonic() < deadline, "no part arrived"
        time.sleep(0.02)


def test_ctrl_c_stops_at_the_next_part_boundary_and_the_next_run_resumes(tmp_path: Path, emulator: Emulator) -> None:
    cwd, apply = _big_upload(tmp_path, emulator)
    emulator.set_faults([{"match": "oss:PUT", "error": "slow", "delay_ms": 600}])
    p = on_pty(apply, cwd)
    p.expect("upload big")
    _until_parts_arrive(emulator)
    p.interrupt()
    sent = time.monotonic()
    p.expect(INTERRUPT, timeout=2)
    code = p.wait(timeout=10)
    assert code == 130 and time.monotonic() - sent < 5, p.text
    assert "Traceback" not in p.text
    assert "Apply interrupted" in p.text and "1 upload(s) stopped at a part boundary" in p.text, p.text
    parts = _parts_in_oss(emulator)
    assert 0 < parts < 24  # stopped mid-file, with what it sent kept in OSS
    # The summary counts what went up before the stop (it said "nothing uploaded").
    assert f"{human_bytes(parts * 256 * 1024)} uploaded in" in p.text, p.text
    assert status_of(cwd)["big"]["status"] == "uploading"
    # The plan counts only what the resume still has to send.
    plan = json.loads(piped(["plan", "-f", "manifests", "--json"], cwd).stdout)
    assert [(c["action"], c["upload_bytes"]) for c in plan["changes"]] == [("resume", 6 * MiB - parts * 256 * 1024)]

    emulator.set_faults([])
    again = piped(apply, cwd)
    assert again.returncode == 0, again.stderr
    assert status_of(cwd)["big"]["status"] in ("processing", "ready")
    calls = emulator.calls()
    assert calls.get("CreateUploadVideo") == 1 and calls.get("RefreshUploadVideo") == 1
    assert len(emulator.state()["videos"]) == 1
    # only what was missing went up this time, and the summary counts only that
    assert "6.0 MiB uploaded" not in again.stdout and " uploaded in " in again.stdout, again.stdout


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path, emulator: Emulator) -> None:
    cwd, apply = _big_upload(tmp_path, emulator)
    # The first parts land at once; those after them stall 4 s, so the first Ctrl-C waits on them.
    emulator.set_faults([{"match": "oss:PUT", "error": "slow", "delay_ms": 1, "count": 4},
                         {"match": "oss:PUT", "error": "slow", "delay_ms": 4000}])
    p = on_pty(apply, cwd)
    p.expect("upload big")
    _until_parts_arrive(emulator)
    p.interrupt()
    p.expect(INTERRUPT, timeout=2)
    p.interrupt()  # parts under way take 4 s more: the second Ctrl-C does not wait for them
    sent = time.monotonic()
    assert p.wait(timeout=10) == 130
    assert time.monotonic() - sent < 1.5, p.text
    emulator.set_faults([])
    assert piped(apply, cwd).returncode == 0
    assert emulator.calls().get("CreateUploadVideo") == 1 and len(emulator.state()["videos"]) == 1
