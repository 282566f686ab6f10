"""The summary line after `apply`: its numbers say what they measure."""

from __future__ import annotations

import io

from vodsync.engine.execution import Outcome, Result
from vodsync.ui import console_for, print_summary

MiB = 1024 * 1024


def summary(result: Result, elapsed: float) -> str:
    out = io.StringIO()
    print_summary(result, elapsed, console_for(out))
    return out.getvalue().strip()


def test_the_rate_is_over_the_uploads_not_the_whole_run():
    # 64 MiB moved in 2 s; the run took 30 s because it then followed transcoding.
    result = Result([Outcome("a", "create", True, "ok")], uploaded_bytes=64 * MiB, upload_span=(100.0, 102.0))
    assert summary(result, 30.0) == (
        "Apply complete: 1 item(s) succeeded, 0 failed; 64.0 MiB uploaded in 2.0 s (32.0 MiB/s), 30.0 s in all."
    )


def test_a_run_without_uploads_says_so():
    result = Result([Outcome("t", "create", True, "ok")])
    assert summary(result, 1.25) == "Apply complete: 1 item(s) succeeded, 0 failed; nothing uploaded, 1.2 s in all."


def _summary(result: Result, *, interrupted: bool) -> str:
    out = io.StringIO()
    print_summary(result, 1.0, console_for(out), interrupted=interrupted)
    return out.getvalue().strip()


def test_the_summary_claims_no_interruption_that_did_not_happen():
    done = Result([Outcome("a", "create", True, "ok")])
    assert "interrupt" not in _summary(done, interrupted=False).lower()
    # Ctrl-C after the last item had finished: nothing was cut short, and it says so.
    late = _summary(done, interrupted=True)
    assert late.startswith("Apply complete: 1 item(s) succeeded, 0 failed")
    assert "nothing was left to stop" in late


def test_an_interrupted_run_says_what_was_cut_short():
    cut = Result([Outcome("a", "create", True, "ok")], stopped=["big"], not_started=["c", "d"])
    assert _summary(cut, interrupted=True) == (
        "Apply interrupted: 1 item(s) succeeded, 0 failed, 1 upload(s) stopped at a part boundary, 2 not started; "
        "nothing uploaded, 1.0 s in all. The state is saved: run again to continue.")
