"""Where the CLI looks for things, and what it says when a path is wrong.

Found by a new user's trial: planning from another directory of the checkout planned the whole
library as new (and an apply there would have made a second copy of everything), a plan file
path that was a directory or missing came second to a credentials error, `plan -out` into a
missing directory and `| head` ended in tracebacks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from clikit import Workspace, mp4

pytest_plugins = ["clikit"]  # the `ws` fixture


def _library(ws: Workspace) -> None:
    (ws.root / ".git").mkdir()  # the workspace is a checkout
    ws.file("media/intro.mp4", mp4(3000))
    ws.manifest([{"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro"}])


def test_the_default_state_is_the_manifests_repositorys_wherever_vodsync_runs(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    _library(ws)
    first = ws.cli("apply", "--wait", "0", state=False)
    assert first.code == 0, first
    assert (ws.root / ".vodsync" / "state.db").is_file(), "the state lives at the top of the checkout"
    assert "no state file at" in first.err  # the first run says it starts a state

    monkeypatch.chdir(ws.manifests)  # elsewhere in the checkout: the same state, nothing new
    again = ws.cli("plan", "--detailed-exitcode", state=False)
    assert again.code == 0, again
    assert "no state file" not in again.err
    assert not (ws.manifests / ".vodsync").exists()

    monkeypatch.chdir(ws.root.parent)  # outside it, naming the manifests: the same state
    assert ws.cli("plan", "--detailed-exitcode", state=False).code == 0


def test_manifests_outside_a_repository_keep_the_state_in_the_working_directory(
        ws: Workspace) -> None:
    ws.file("media/intro.mp4", mp4(3000))
    ws.manifest([{"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro"}])
    run = ws.cli("plan", state=False, endpoint=False)
    assert run.code == 0, run
    assert "no state file at .vodsync/state.db yet" in run.err


def test_a_plan_file_path_is_checked_first_and_said_plainly(ws: Workspace) -> None:
    _library(ws)
    no_credentials = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ""}
    directory = ws.cli("apply", "manifests", manifests=False, endpoint=False, env=no_credentials)
    assert directory.code == 1, directory
    assert "is a directory, not a saved plan" in directory.err and "vodsync apply -f manifests" in directory.err
    missing = ws.cli("apply", "nope.json", manifests=False, endpoint=False, env=no_credentials)
    assert missing.code == 1 and "no plan file nope.json" in missing.err, missing
    unwritable = ws.cli("plan", "-out", str(ws.root / "no" / "such" / "dir" / "p.json"))
    assert unwritable.code == 1 and "cannot write the plan to" in unwritable.err, unwritable
    assert "Traceback" not in unwritable.err
    both = ws.cli("plan", "--json", "--format", "markdown")
    assert both.code == 1 and "cannot be combined" in both.err, both


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """`vodsync schema | head -1`: the process sees a closed pipe and must not print a traceback."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before vodsync writes a byte
    with os.fdopen(writer, "wb") as out:
        done = subprocess.run([sys.executable, "-m", "vodsync", "schema"], stdout=out, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=tmp_path, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 141, (done.returncode, done.stderr)


def test_a_plan_beside_a_running_apply_says_so(ws: Workspace) -> None:
    from vodsync.state.store import StateStore

    _library(ws)
    assert "another vodsync process" not in ws.cli("plan").err
    with StateStore.open(ws.state):  # the writer lock, as an apply (or the daemon) holds it
        run = ws.cli("plan")
    assert run.code == 0, run
    assert f"another vodsync process (pid {os.getpid()}) is applying to this state now" in run.err
    assert "another vodsync process" not in ws.cli("plan").err, "the lock is gone with its holder"


def test_a_state_made_in_the_working_directory_under_the_old_default_is_still_used(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    _library(ws)
    old_place = ws.manifests / "sub"
    old_place.mkdir()
    monkeypatch.chdir(old_place)  # an apply from here once kept its state here
    made = ws.cli("apply", "--wait", "0", "--state", str(old_place / ".vodsync" / "state.db"), state=False)
    assert made.code == 0, made
    run = ws.cli("plan", "--detailed-exitcode", state=False)
    assert run.code == 0, run  # not "everything is new": that would duplicate the library
    assert "the default is now" in run.err
    assert not (ws.root / ".vodsync").exists()
