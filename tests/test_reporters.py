"""Every reporter implements the executor's `Reporter` Protocol, and reporting never fails an item (issue 11).

The terminal's reporter once lacked `outcome()`: every run on a terminal crashed after its
uploads had succeeded and recorded all six items as failed. Here each implementation is
checked member by member against the Protocol (names and parameters, via `inspect`) and
every method is called; a reporter that raises is shown to leave the run's items done.
"""

from __future__ import annotations

import inspect
import io
import logging
import threading
from pathlib import Path

import pytest
from rich.console import Console

from vodsync.cloud.settings import CloudSettings
from vodsync.cloud.vod import VodClient
from vodsync.daemon.loop import DaemonReporter
from vodsync.daemon.metrics import Metrics
from vodsync.desired.loader import load_manifests
from vodsync.emulator import Emulator
from vodsync.engine.execution import GuardedReporter, NullReporter, Outcome, Reporter, Waiting
from vodsync.engine.executor import ExecOptions, Executor
from vodsync.engine.plan import PlanOptions
from vodsync.engine.reconcile import build_plan
from vodsync.state.store import RecordStatus, StateStore
from vodsync.ui import LogReporter, RichReporter

MEMBERS = [name for name, value in vars(Reporter).items()
           if callable(value) and not name.startswith("_")]


def _terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100)


IMPLEMENTATIONS = {
    "RichReporter": lambda: RichReporter(_terminal()),
    "LogReporter": lambda: LogReporter(stream=io.StringIO()),
    "DaemonReporter": lambda: DaemonReporter(Metrics()),
    "NullReporter": NullReporter,
    "GuardedReporter": lambda: GuardedReporter(NullReporter()),
}


def test_the_protocol_names_every_member_the_executor_calls() -> None:
    assert set(MEMBERS) == {"upload_started", "upload_progress", "upload_finished", "outcome", "waiting", "notice"}


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_each_reporter_implements_the_protocol(name: str) -> None:
    reporter = IMPLEMENTATIONS[name]()
    assert isinstance(reporter, Reporter)
    for member in MEMBERS:
        declared = inspect.signature(getattr(Reporter, member))
        actual = inspect.signature(getattr(type(reporter), member))
        assert list(actual.parameters) == list(declared.parameters), (name, member)
        for param in actual.parameters.values():
            assert param.kind is declared.parameters[param.name].kind, (name, member, param.name)


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_each_reporter_takes_every_call(name: str) -> None:
    reporter = IMPLEMENTATIONS[name]()
    with reporter if hasattr(reporter, "__enter__") else _nothing():
        reporter.upload_started("a", 100)
        reporter.upload_progress("a", 40, 100)
        reporter.upload_progress("a", 60, 60)  # a resume: only what is still to send
        reporter.upload_finished("a")
        reporter.outcome(Outcome("a", "create", True, "created v1"))
        reporter.outcome(Outcome("b", "create", False, "failed"))
        reporter.waiting(Waiting(3, 1, 42.0))
        reporter.waiting(Waiting(0, 0, 43.0))
        reporter.notice("Interrupt received")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_waiting_says_what_and_how_long() -> None:
    assert Waiting(3, 1, 42).text() == "waiting for 3 transcodes, 1 URL ingest … 0:42"
    assert Waiting(1, 0, 3725).text() == "waiting for 1 transcode … 1:02:05"
    assert Waiting(0, 2, 5).text() == "waiting for 2 URL ingests … 0:05"


def test_log_reporter_says_what_it_waits_for_every_few_seconds(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    reporter = LogReporter(every=5, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="vodsync.apply"):
        reporter.waiting(Waiting(3, 1, 0))
        now[0] = 2
        reporter.waiting(Waiting(3, 1, 2))  # too soon for another line
        now[0] = 6
        reporter.waiting(Waiting(2, 0, 6))
    assert [r.getMessage() for r in caplog.records] == [
        "waiting for 3 transcodes, 1 URL ingest … 0:00", "waiting for 2 transcodes … 0:06"]


def test_the_terminal_reporter_shows_the_waiting_line_and_notices() -> None:
    console = _terminal()
    with RichReporter(console) as reporter:
        reporter.waiting(Waiting(3, 1, 42))
        reporter.progress.refresh()
        reporter.notice("Interrupt received: stopping")
    out = console.file.getvalue()
    assert "waiting for 3 transcodes, 1 URL ingest … 0:42" in out and "Interrupt received: stopping" in out


class Exploding:
    """A reporter whose every method raises, as the terminal's `outcome` once did."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def _boom(self, *args: object) -> None:
        with self._lock:
            self.calls += 1
        raise AttributeError("'RichReporter' object has no attribute 'outcome'")

    upload_started = upload_progress = upload_finished = outcome = waiting = notice = _boom


def test_a_reporter_that_raises_fails_no_item(tmp_path: Path, emulator: Emulator,
                                              caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + b"a" * 3000)
    (tmp_path / "media" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    (tmp_path / "m.yaml").write_text("media:\n  - {name: a, type: video, file: media/a.mp4}\n"
                                     "  - {name: b, type: image, file: media/b.png}\n")
    client = VodClient(CloudSettings("emulator", "emulator-secret", endpoint=emulator.url))
    exploding = Exploding()
    with StateStore.open(tmp_path / "state.db") as store:
        plan = build_plan(load_manifests(tmp_path), store, PlanOptions())
        result = Executor(store, client, checkpoint_dir=tmp_path / "cp", reporter=exploding,
                          options=ExecOptions(wait=5, poll_interval=0.05)).run(plan)
        records = store.records()
    assert exploding.calls > 0
    assert result.ok and not result.failed, result.outcomes
    assert {r.status for r in records.values()} == {RecordStatus.READY}
    # said once per method, not once per byte
    warnings = [r for r in caplog.records if "could not show progress" in r.getMessage()]
    assert 0 < len(warnings) <= 6
