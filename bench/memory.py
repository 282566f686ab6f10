"""Memory: peak RSS of `vodsync apply` uploading one big file, and of a no-op plan at scale.

    python bench/memory.py [--quick] [--upload-gib 4] [--items 100000]

Peak RSS is the process's high-water mark (wait4's ru_maxrss, i.e. VmHWM) of the
whole `vodsync` process. Baselines measured in the same run: a bare
`python -c "import vodsync.cli"` (what the interpreter and the CLI module cost
before any work) and, for the plan, the floor script of bench/noop_plan.py
(the manifests parsed with PyYAML's C loader, the files stat-ed).

Targets: upload of a 4 GiB file < 200 MiB; no-op plan over 100,000 items < 300 MiB.
--quick: a 1 GiB file and 10,000 items. The big file is sparse (its bytes are read,
sent and checksummed like any other; only the disk is spared).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PYTHON,
    EmulatorProcess,
    GiB,
    MiB,
    clean_env,
    floor_cmd,
    make_file,
    make_library,
    print_machine,
    require_disk,
    run_process,
    verdict,
    vodsync_cmd,
    workdir,
    write_yaml,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 1 GiB file and 10,000 items")
    parser.add_argument("--upload-gib", type=float, default=None, help="size of the uploaded file (default 4)")
    parser.add_argument("--items", type=int, default=None, help="items of the no-op plan (default 100000)")
    args = parser.parse_args()
    size = int((args.upload_gib or (1 if args.quick else 4)) * GiB)
    items = args.items or (10_000 if args.quick else 100_000)
    print_machine()
    ok = True

    bare = run_process([PYTHON, "-c", "import vodsync.cli"])
    print(f"  baseline: python -c 'import vodsync.cli'    peak RSS {bare.max_rss / MiB:6.0f} MiB")

    with workdir("memory-upload") as root:
        require_disk(root, size)
        make_file(root / "manifests" / "media" / "big.mp4", size, sparse=True)
        write_yaml(root / "manifests" / "big.yaml", "media:\n  - {name: big, type: video, file: media/big.mp4}\n")
        with EmulatorProcess(root / "emulator-data") as emu:
            r = run_process(vodsync_cmd("apply", "-f", str(root / "manifests"), "--state",
                                        str(root / "state" / "state.db"), "--endpoint", emu.url, "--yes",
                                        "--wait", "0", "--log-level", "warning"), cwd=root)
        if r.returncode != 0:
            print(f"  apply failed ({r.returncode}):\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
            ok = False
        else:
            print(f"  vodsync apply, one {size / GiB:.0f} GiB file:  peak RSS {r.max_rss / MiB:6.0f} MiB"
                  f"  ({r.seconds:.1f} s, {size / MiB / r.seconds:.0f} MiB/s)")
            ok &= verdict(f"upload of {size / GiB:.0f} GiB < 200 MiB", r.max_rss < 200 * MiB,
                          f"{r.max_rss / MiB:.0f} MiB ({(r.max_rss - bare.max_rss) / MiB:.0f} MiB over the bare import)")

    with workdir("memory-plan") as root:
        print(f"  building a library of {items:,} items in sync ...", flush=True)
        manifests, state = make_library(root, items)
        plan = run_process(vodsync_cmd("plan", "-f", str(manifests), "--state", str(state)),
                           env=clean_env(), cwd=root)
        floor = run_process(floor_cmd(manifests), cwd=root)
        print(f"  vodsync plan, {items:,} items in sync:   peak RSS {plan.max_rss / MiB:6.0f} MiB  "
              f"-> {plan.stdout.strip()[:80]}")
        print(f"  floor (parse + stat), same library:       peak RSS {floor.max_rss / MiB:6.0f} MiB")
        ok &= verdict(f"no-op plan over {items:,} items < 300 MiB", plan.max_rss < 300 * MiB,
                      f"{plan.max_rss / MiB:.0f} MiB ({plan.max_rss / floor.max_rss:.2f}x the floor's)")
    print(f"\n{'all targets met' if ok else 'some targets missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
