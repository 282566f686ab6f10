"""Running `vodsync` in-process for tests: argv in, exit code and captured output out."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The emulator's account key, as a user would export it.
ACCOUNT_ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "emulator", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "emulator-secret"}


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:  # shown by pytest when an assertion about a run fails
        return f"exit {self.code}\n--- stdout\n{self.out[-4000:]}\n--- stderr\n{self.err[-4000:]}"


def run_cli(argv: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """`vodsync ARGV` in this process with the account credentials (plus `env`) in the environment."""
    from vodsync.cli import main

    merged = {**ACCOUNT_ENV, **(env or {})}
    saved = {k: os.environ.get(k) for k in merged}
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(merged)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Run(code, out.getvalue(), err.getvalue())
