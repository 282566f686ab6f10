"""Untrusted input stays contained (issue 13): drop folders, manifests from pull requests, the repository's config.

Each test plays the attacker through the real entry points: a `vodsync watch`
process for drop folders and half-written manifests, the CLI for manifests and
configs. See docs/guarantees.md, "Threat model".
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import test_daemon_process as daemon_kit

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
