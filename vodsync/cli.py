"""The command line: argument parsing, exit codes and wiring. No logic lives here.

Each command imports what it needs lazily, so `vodsync plan` on a large library
does not pay for the emulator, watchdog or the SDKs at start-up.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_emulator(args: argparse.Namespace) -> int:
    from vodsync.emulator.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vodsync",
        description="Keep an ApsaraVideo VOD account in the state your manifests and drop folders describe.",
    )
    from vodsync import __version__

    parser.add_argument("--version", action="version", version=f"vodsync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from vodsync.emulator.cli import add_arguments as add_emulator_arguments

    p = sub.add_parser("emulator", help="run a local VOD + OSS emulator that the real SDKs talk to")
    add_emulator_arguments(p)
    p.set_defaults(func=_cmd_emulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 1
    return int(args.func(args) or 0)
