"""`vodsync emulator`: its arguments, and running it in the foreground until a signal.

Prints exactly one line to stdout once it serves (scripts wait for it), then runs
until SIGTERM or Ctrl-C and exits 0 after a clean stop (which saves the snapshot
when --data-dir is given).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def bounded(kind: type[int] | type[float], low: float | None = None, high: float | None = None, *,
            above: bool = False, why: str = "") -> Callable[[str], Any]:
    """An argparse `type=` that refuses values out of range with the range in words (and `why`).

    `above=True` makes `low` exclusive. (`vodsync.cli` uses it too: the emulator imports nothing
    of vodsync, so the one copy lives here.)"""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):  # nan, inf
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        note = f" ({why})" if why else ""
        if low is not None and (value <= low if above else value < low):
            raise argparse.ArgumentTypeError(
                f"must be {'greater than' if above else 'at least'} {low}{note}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}{note}, got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=bounded(int, 0, 65535), default=9090,
                        help="port to bind; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep state and uploaded bytes here across restarts (default: a temp dir, deleted on exit)")
    parser.add_argument("--access-key-id", default="emulator", help="the account AccessKeyId (default: %(default)s)")
    parser.add_argument("--access-key-secret", default="emulator-secret",
                        help="the account AccessKeySecret (default: %(default)s)")
    parser.add_argument("--sts-ttl", type=bounded(int, 1), default=3000, metavar="SECONDS",
                        help="lifetime of upload credentials (default: %(default)s)")
    parser.add_argument("--transcode-seconds", type=bounded(float, 0), default=2.0, metavar="S",
                        help="emulated time from upload to Normal (default: %(default)s)")
    parser.add_argument("--url-job-seconds", type=bounded(float, 0), default=2.0, metavar="S",
                        help="emulated minimum duration of an UploadMediaByURL job (default: %(default)s)")
    # oss.ETAG_MODES, not imported: every vodsync command builds this parser, none should load the emulator
    parser.add_argument("--etags", choices=("md5", "crc64"), default="md5",
                        help="md5: OSS's ETags (default); crc64: ETags from the CRC-64 and size, which skips "
                             "the MD5 of every byte (for benchmarks: the real service pays it on its own machines)")


def run(args: argparse.Namespace) -> int:
    from vodsync.emulator.server import Emulator

    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    emulator = Emulator(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        access_key_id=args.access_key_id,
        access_key_secret=args.access_key_secret,
        sts_ttl=args.sts_ttl,
        transcode_seconds=args.transcode_seconds,
        url_job_seconds=args.url_job_seconds,
        etags=args.etags,
    )
    try:
        try:
            emulator.start()
        except OSError as err:  # port taken, data dir unusable: say so, no traceback
            where = f" (data dir {args.data_dir})" if args.data_dir else ""
            print(f"vodsync emulator: cannot start on {args.host}:{args.port}{where}: {err.strerror or err}",
                  file=sys.stderr, flush=True)
            return 1
        print(f"vodsync emulator listening on {emulator.url}", flush=True)
        while not stop.wait(3600):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
