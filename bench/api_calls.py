"""API calls per item: what `vodsync apply` costs the account, counted at the emulator.

    python bench/api_calls.py [--quick] [--count 1000]

For each kind (video, image, attached, url, register), `vodsync apply --yes` creates
`--count` items into an empty account and follows them until they settle; then
`vodsync plan --refresh` reads the videos back. Every call the emulator receives is
counted (its control plane counts per action). URL sources and objects to register
are served by the emulator itself (public-read seed buckets).

Targets (n = count): URL ingest <= ceil(n/20) UploadMediaByURL calls, registration
<= ceil(n/10) RegisterMedia calls, refresh <= ceil(n/20) reads.
--quick: 200 items of each kind.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    clean_env,
    print_machine,
    run_process,
    verdict,
    vodsync_cmd,
    workdir,
    write_yaml,
)

SEED_BUCKET = "bench-seed"
EXT = {"video": "mp4", "image": "png", "attached": "vtt", "url": "mp4", "register": "mp4"}


def manifest(kind: str, n: int, endpoint: str) -> str:
    out = ["defaults:\n  tags: [bench]\n\nmedia:\n"]
    for i in range(n):
        name = f"{kind}/item-{i:05d}"
        out.append(f"  - name: {name}\n    type: {kind}\n    title: {kind} {i}\n")
        if kind in ("video", "image", "attached"):
            out.append(f"    file: media/item-{i:05d}.{EXT[kind]}\n")
        elif kind == "url":
            out.append(f"    url: {endpoint}/{SEED_BUCKET}/url/item-{i:05d}.mp4\n")
        else:
            out.append(f"    file_url: {endpoint}/{SEED_BUCKET}/register/item-{i:05d}.mp4\n")
        if kind == "attached":
            out.append("    business_type: subtitle\n")
    return "".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 items of each kind")
    parser.add_argument("--count", type=int, default=None, help="items of each kind (default 1000)")
    args = parser.parse_args()
    n = args.count or (200 if args.quick else 1000)
    print_machine()
    from vodsync.emulator import Emulator

    ok = True
    with workdir("calls") as root:
        seed = root / "seed" / SEED_BUCKET
        for kind in ("url", "register"):
            (seed / kind).mkdir(parents=True)
            for i in range(n):
                (seed / kind / f"item-{i:05d}.mp4").write_bytes(b"\0" * 1024)
        for kind in ("video", "image", "attached"):
            (root / "manifests" / kind / "media").mkdir(parents=True)
            for i in range(n):
                (root / "manifests" / kind / "media" / f"item-{i:05d}.{EXT[kind]}").write_bytes(
                    i.to_bytes(4, "little") * 256)
        # In this process: the bench only counts calls, and the seed buckets need the Python API.
        with Emulator(data_dir=str(root / "emulator-data"), transcode_seconds=0, url_job_seconds=0) as emu:
            env = clean_env(VODSYNC_ENDPOINT=emu.url)
            print(f"{n} items of each kind; calls counted at the emulator\n")
            print(f"  {'run':<28} {'seconds':>7}  calls (per item)")
            for kind in ("video", "image", "attached", "url", "register"):
                emu.reset()
                emu.publish_directory(root / "seed")
                before = emu.calls()
                mdir = root / "manifests" / kind
                write_yaml(mdir / "items.yaml", manifest(kind, n, emu.url))
                state = root / "state" / kind / "state.db"
                started = time.perf_counter()
                r = run_process(vodsync_cmd("apply", "-f", str(mdir), "--state", str(state), "--yes",
                                            "--wait", "120", "--log-level", "warning"),
                                env=env, cwd=root)
                seconds = time.perf_counter() - started
                if r.returncode != 0:
                    print(f"  apply of {kind} items exited {r.returncode}:\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
                    ok = False
                    continue
                calls = _minus(emu.calls(), before)
                fetched = calls.pop("oss:GET", 0) if kind == "url" else 0  # the emulator's own downloads
                print(f"  {'create ' + kind:<28} {seconds:7.1f}  {_describe(calls, n)}"
                      + (f"  [+ {fetched} oss:GET: the URL jobs fetching their sources]" if fetched else ""),
                      flush=True)
                if kind == "url":
                    submits = calls.get("UploadMediaByURL", 0)
                    ok &= verdict(f"URL ingest: submits <= ceil(n/20) = {math.ceil(n / 20)}",
                                  submits <= math.ceil(n / 20), f"{submits} UploadMediaByURL")
                elif kind == "register":
                    regs = calls.get("RegisterMedia", 0)
                    ok &= verdict(f"registration <= ceil(n/10) = {math.ceil(n / 10)}",
                                  regs <= math.ceil(n / 10), f"{regs} RegisterMedia")
                elif kind == "video":
                    before = emu.calls()
                    started = time.perf_counter()
                    r = run_process(vodsync_cmd("plan", "--refresh", "-f", str(mdir), "--state", str(state)),
                                    env=env, cwd=root)
                    seconds = time.perf_counter() - started
                    calls = _minus(emu.calls(), before)
                    reads = sum(calls.values())
                    print(f"  {'plan --refresh of videos':<28} {seconds:7.1f}  {_describe(calls, n)}"
                          f"  -> {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]}")
                    ok &= verdict(f"refresh: reads <= ceil(n/20) = {math.ceil(n / 20)}",
                                  reads <= math.ceil(n / 20), f"{reads} calls")
    print(f"\n{'all targets met' if ok else 'some targets missed'}")
    return 0


def _minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _describe(calls: dict[str, int], n: int) -> str:
    total = sum(calls.values())
    parts = ", ".join(f"{k} {v}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1]))
    return f"{total} ({total / n:.2f}/item): {parts}"


if __name__ == "__main__":
    sys.exit(main())
