"""Daemon: drop-folder latency and idle CPU of `vodsync watch`.

    python bench/daemon.py [--quick] [--trials 5] [--stable 2] [--idle 60]

An emulator and `vodsync watch --config ...` run as their own processes; the config
has one drop folder (kind video, `stable_seconds` = --stable) and a small manifest
library already applied.

- Latency: a file is written into the drop folder (written whole, then closed); the
  bench watches the emulator's per-action call counts (every 10 ms) for the
  CreateUploadVideo that starts its upload. Reported: time from the end of the write
  to that call, minus the stability window. The end of the write is the earliest
  moment the file can be stable, so this is the strictest reading of the target.
- Idle CPU: once every drop file is uploaded and transcoded, the daemon's CPU time
  (/proc/PID/stat) over --idle seconds.

Targets: latency < 1 s beyond the stability window; idle CPU < 1% of a core.
--quick: 3 trials and a 20 s idle window.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EmulatorProcess,
    MiB,
    clean_env,
    make_file,
    print_machine,
    proc_cpu_seconds,
    verdict,
    vodsync_cmd,
    workdir,
    write_yaml,
)


def wait_for(predicate, timeout: float, step: float = 0.01) -> float | None:  # noqa: ANN001
    """Poll `predicate` until true; the time.time() it became true, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        time.sleep(step)
    return None


def main() -> int:
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 trials, 20 s idle window")
    parser.add_argument("--trials", type=int, default=None, help="drop files, one at a time (default 5)")
    parser.add_argument("--stable", type=float, default=2.0, help="the drop folder's stable_seconds (default 2)")
    parser.add_argument("--idle", type=float, default=None, help="idle window in seconds (default 60)")
    args = parser.parse_args()
    trials = args.trials or (3 if args.quick else 5)
    idle = args.idle or (20.0 if args.quick else 60.0)
    print_machine()
    ok = True
    with workdir("daemon") as root, EmulatorProcess(root / "emulator-data", transcode_seconds=1) as emu:
        (root / "drop").mkdir()
        make_file(root / "manifests" / "media" / "intro.mp4", 1 * MiB)
        write_yaml(root / "manifests" / "library.yaml",
                   "media:\n  - {name: intro, type: video, file: media/intro.mp4, title: Intro}\n")
        config = root / "vodsync.yaml"
        write_yaml(config, (
            f"manifests: {root / 'manifests'}\nstate: {root / 'state' / 'state.db'}\nendpoint: {emu.url}\n"
            f"roots: [{root}]\n"
            f"drop_folders:\n  - path: {root / 'drop'}\n    kind: video\n    stable_seconds: {args.stable}\n"
            "daemon:\n  interval_seconds: 600\n"
        ))
        log_path = root / "watch.log"
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(vodsync_cmd("watch", "--config", str(config), "--log-format", "json"),
                                      stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=root)
        try:
            def calls(action: str) -> int:
                return emu.calls().get(action, 0)

            if wait_for(lambda: calls("CreateUploadVideo") >= 1, 60) is None or daemon.poll() is not None:
                print(f"  the daemon did not upload the manifest's item; its log:\n{log_path.read_text()[-3000:]}")
                return 0
            time.sleep(3)  # let the first pass and its poll settle
            latencies = []
            for i in range(trials):
                before = calls("CreateUploadVideo")
                target = root / "drop" / f"clip-{i:02d}.mp4"
                tmp = root / f".clip-{i:02d}.partial"
                tmp.write_bytes(os.urandom(4 * MiB))  # new content: drop items are named by their digest
                tmp.rename(target)  # the whole file appears at once (as `mv` into the folder)
                written = time.time()
                started = wait_for(lambda b=before: calls("CreateUploadVideo") > b, args.stable + 60)
                if started is None:
                    print(f"  trial {i}: no upload started within {args.stable + 60:.0f} s")
                    ok = False
                    continue
                latency = started - written - args.stable
                latencies.append(latency)
                print(f"  trial {i}: upload started {started - written:.2f} s after the write "
                      f"({latency:+.2f} s beyond the {args.stable:g} s window)", flush=True)
                wait_for(lambda b=before: calls("CreateUploadVideo") > b and not emu.state().get(
                    "multipart_uploads"), 30, step=0.1)
                time.sleep(1.0)
            # Idle: everything uploaded; wait for transcoding polls to end, then measure.
            time.sleep(max(12.0, args.stable + 2))
            cpu0, t0 = proc_cpu_seconds(daemon.pid), time.monotonic()
            time.sleep(idle)
            cpu = proc_cpu_seconds(daemon.pid) - cpu0
            span = time.monotonic() - t0
            alive = daemon.poll() is None
        finally:
            daemon.terminate()
            try:
                daemon.wait(40)
            except subprocess.TimeoutExpired:
                daemon.kill()
        if latencies:
            worst = max(latencies)
            print(f"  latency beyond the window: median {statistics.median(latencies):.2f} s, worst {worst:.2f} s "
                  f"over {len(latencies)} trials")
            ok &= verdict("drop file stable -> upload starts < 1 s beyond the window", worst < 1.0,
                          f"worst {worst:.2f} s")
        share = cpu / span
        print(f"  idle: {cpu:.2f} CPU s over {span:.0f} s = {100 * share:.2f}% of a core"
              f"{'' if alive else ' (the daemon had exited!)'}")
        ok &= verdict("idle daemon CPU < 1% of a core", share < 0.01 and alive, f"{100 * share:.2f}%")
        print(f"\n{'all targets met' if ok else 'some targets missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
