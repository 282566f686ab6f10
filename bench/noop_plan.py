"""No-op plan at scale: `vodsync plan` over a library already in sync, against a floor.

    python bench/noop_plan.py [--quick] [--sizes 10000 100000] [--repeat 3]

For each size, a library of local files (80% videos, 10% images, 5% attached) and URL
ingests (5%), 1,000 items per manifest file, and a state file in which every item is in
sync. Measured as whole processes, start-up included (best of --repeat runs):

- `vodsync plan` (VODSYNC_ENDPOINT points at an emulator, which must count no call);
- the floor: a script that only parses the same manifests with PyYAML's C loader and
  stats the same files.

Targets: plan <= 2x the floor at each size; no API call; 10,000 items in under 2 s; at
1,000,000 items (`--sizes 1000000 --repeat 1`: about 15 minutes, 5 GiB of disk), peak RSS
under 1 GiB. --quick: 10,000 items only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EmulatorProcess,
    GiB,
    MiB,
    clean_env,
    floor_cmd,
    make_library,
    print_machine,
    run_process,
    verdict,
    vodsync_cmd,
    workdir,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 items only")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="library sizes (default 10000 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command; the best counts")
    args = parser.parse_args()
    sizes = args.sizes or ([10_000] if args.quick else [10_000, 100_000])
    print_machine()
    ok = True
    for size in sizes:
        with workdir(f"noop{size}") as root, EmulatorProcess(root / "emulator-data") as emu:
            print(f"\n{size:,} items: building the library and its state ...", flush=True)
            manifests, state = make_library(root, size)
            env = clean_env(VODSYNC_ENDPOINT=emu.url)
            plan_cmd = vodsync_cmd("plan", "-f", str(manifests), "--state", str(state), "--detailed-exitcode")
            # Warm the page cache and the .pyc files once; then alternate the two commands.
            first = run_process(plan_cmd, env=env, cwd=root)
            if first.returncode != 0:
                print(f"  vodsync plan exited {first.returncode} (0 = no changes expected):\n"
                      f"{first.stdout[-2000:]}\n{first.stderr[-2000:]}")
                ok = False
                continue
            run_process(floor_cmd(manifests), env=env, cwd=root)
            plans, floors = [], []
            for _ in range(args.repeat):
                plans.append(run_process(plan_cmd, env=env, cwd=root))
                floors.append(run_process(floor_cmd(manifests), env=env, cwd=root))
            plan = min(plans, key=lambda r: r.seconds)
            floor = min(floors, key=lambda r: r.seconds)
            calls = emu.calls()
            print(f"  vodsync plan  best {plan.seconds:6.2f} s  median {statistics.median(r.seconds for r in plans):6.2f} s"
                  f"  CPU {plan.cpu_seconds:5.2f} s  peak RSS {plan.max_rss / MiB:6.0f} MiB  -> {plan.stdout.strip()}")
            print(f"  floor         best {floor.seconds:6.2f} s  median {statistics.median(r.seconds for r in floors):6.2f} s"
                  f"  CPU {floor.cpu_seconds:5.2f} s  peak RSS {floor.max_rss / MiB:6.0f} MiB  -> {floor.stdout.strip()} items")
            ratio = plan.seconds / floor.seconds
            ok &= verdict(f"{size:,}: plan <= 2x floor", ratio <= 2.0, f"{ratio:.2f}x")
            ok &= verdict(f"{size:,}: no API call", not calls, f"emulator counted {calls or 'nothing'}")
            if size == 10_000:
                ok &= verdict("10,000 items in under 2 s", plan.seconds < 2.0, f"{plan.seconds:.2f} s")
            if size >= 1_000_000:
                rss = max(r.max_rss for r in plans)
                ok &= verdict(f"{size:,}: peak RSS < 1 GiB", rss < GiB,
                              f"{rss / MiB:.0f} MiB ({rss / floor.max_rss:.2f}x the floor's)")
    print(f"\n{'all targets met' if ok else 'some targets missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
