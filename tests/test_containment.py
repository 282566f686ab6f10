"""Untrusted input stays contained (issue 13): drop folders, manifests from pull requests, the repository's config.

Each test plays the attacker through the real entry points: a `vodsync watch`
process for drop folders and half-written manifests, the CLI for manifests and
configs. See docs/guarantees.md, "Threat model".
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import test_daemon_process as daemon_kit
from clirun import run_cli

from vodsync.emulator import Emulator

project = daemon_kit.project  # fixtures
daemons = daemon_kit.daemons
start, eventually, records = daemon_kit.start, daemon_kit.eventually, daemon_kit.records


def test_links_planted_in_done_and_failed_are_never_written_through(
    project: Path, emulator: Emulator, daemons: list
) -> None:
    drop = project / "drop"
    state = project / "state" / "state.db"
    elsewhere = project / "created-by-vodsync.yaml"
    d = start(daemons, project, emulator)
    d.wait_msg("watching")
    state_bytes = state.read_bytes()
    (drop / "failed").mkdir()
    (drop / "failed" / "evil.xyz.reason.txt").symlink_to(state)
    (drop / "done").mkdir()
    (drop / "done" / "clip.yaml").symlink_to(elsewhere)  # dangling: following it would create the file

    (drop / "evil.xyz").write_bytes(b"not a media file")
    d.wait_msg("could not move")
    (drop / "clip.yaml").write_text("title: Clip\n")
    (drop / "clip.mp4").write_bytes(b"v" * 10_000)
    line = d.wait_msg("could not move it")
    assert "symbolic link" in line["msg"]

    assert state.read_bytes()[:16] == state_bytes[:16] == b"SQLite format 3\x00"
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not elsewhere.exists() and (drop / "done" / "clip.yaml").is_symlink()
    assert (drop / "evil.xyz").read_bytes() == b"not a media file"  # the failed move left it in place
    assert eventually(
        lambda: [r for r in records(project).values() if r.origin == "drop:drop"], what="record"
    )
    rc, _ = d.stop()
    assert rc == 0


# --- a vodsync.yaml that came with the manifests ---------------------------------------------


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clone of a manifests repository (the working directory) with an item reading a file outside it."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "manifests").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "secret.mp4").write_bytes(b"private")  # /etc/..., with an extension VOD takes
    (repo / "manifests" / "m.yaml").write_text(
        f"media:\n  - name: leak\n    type: video\n    file: {tmp_path / 'etc' / 'secret.mp4'}\n    title: Leak\n"
    )
    monkeypatch.chdir(repo)
    return repo


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("roots: [/]\n", "roots"),
        ("endpoint: http://127.0.0.1:9/attacker\n", "endpoint"),
        ("state: /tmp/elsewhere.db\n", "state"),
        ("drop_folders:\n  - path: /\n", "drop_folders"),
        ("credentials: {access_key_id: a, access_key_secret: b}\n", "credentials"),
    ],
)
def test_a_committed_config_cannot_widen_what_a_run_touches(checkout: Path, setting: str, key: str) -> None:
    (checkout / "vodsync.yaml").write_text("region: cn-beijing\n" + setting)
    os.chmod(checkout / "vodsync.yaml", 0o600)
    run = run_cli(["validate"])
    assert run.code == 1, run
    assert f"vodsync.yaml:2: {key}: " in run.err and "--config" in run.err, run
    assert "Traceback" not in run.err


def test_roots_from_a_committed_config_do_not_let_etc_through(checkout: Path, tmp_path: Path) -> None:
    (checkout / "vodsync.yaml").write_text("roots: [/]\n")
    run = run_cli(["validate"])
    assert run.code == 1 and "roots" in run.err, run
    # The same file named with --config is the operator's choice: then /etc is allowed.
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text(f"roots: [/]\nmanifests: {checkout / 'manifests'}\n")
    run = run_cli(["validate", "--config", str(chosen)])
    assert run.code == 0, run
    # A committed config without widening keys is still read.
    (checkout / "vodsync.yaml").write_text("region: cn-beijing\n")
    run = run_cli(["validate"])
    assert run.code == 1 and "secret.mp4" in run.err and "outside the allowed roots" in run.err, run
