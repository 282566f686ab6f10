"""Untrusted input stays contained (issue 13): drop folders, manifests from pull requests, the repository's config.

Each test plays the attacker through the real entry points: a `vodsync watch`
process for drop folders and half-written manifests, the CLI for manifests and
configs. See docs/guarantees.md, "Threat model".
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import clikit
import pytest
import test_daemon_process as daemon_kit
from clikit import Workspace, mp4
from clirun import run_cli

from vodsync.emulator import Emulator

project = daemon_kit.project  # fixtures
daemons = daemon_kit.daemons
ws = clikit.ws
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


# --- manifests from a pull request ---------------------------------------------------------------

# `vodsync validate` in a grandchild: a process's ru_maxrss starts at its parent's resident size
# when forked (pytest's, hundreds of MB), so a small launcher starts the run and reports its
# child's peak (RUSAGE_CHILDREN), which then is the run's own.
_MEASURE = """
import resource, subprocess, sys, time
if sys.argv[2] == "run":
    from vodsync.cli import main
    started = time.monotonic()
    code = main(["validate", "-f", sys.argv[1]])
    print(f"RESULT {code} {time.monotonic() - started:.3f}", flush=True)
    sys.exit(0)
child = subprocess.run([sys.executable, "-c", sys.argv[3], sys.argv[1], "run"], stdout=subprocess.PIPE, text=True)
peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(child.stdout.strip() + f" {peak_mib:.1f}")
"""


def test_8000_copies_of_one_item_are_one_short_problem_in_seconds(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.mp4").write_bytes(b"x")
    item = "  - name: same\n    type: video\n    file: ../a.mp4\n"  # 408 KB for 8,000
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "m.yaml").write_text("media:\n" + item * 8000)
    assert 400_000 < (manifests / "m.yaml").stat().st_size < 600_000
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(manifests), "launch", _MEASURE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    code, took, peak_mib = run.stdout.split("RESULT ")[1].split()
    assert code == "1" and "Traceback" not in run.stderr
    assert float(took) < 5 and float(peak_mib) < 200, (took, peak_mib)
    assert len(run.stderr) < 2_000, run.stderr[:2_000]
    at = "manifests/m.yaml"  # locations are given relative to the working directory
    assert (
        f"duplicate name 'same': defined 8000 times, also at {at}:5, {at}:8, {at}:11 and 7996 more" in run.stderr
    )


def test_many_problems_are_counted_not_all_printed(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "m.yaml").write_text(
        "media:\n" + "".join(f"  - name: n{i}\n    type: nope\n" for i in range(5000))
    )
    run = run_cli(["validate", "-f", str(manifests)])
    assert run.code == 1 and "(5000 problems)" in run.err and "and 4900 more" in run.err
    assert run.err.count("\n") < 110


def test_a_manifest_with_two_media_keys_is_refused_at_the_second(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / ".git").mkdir()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "m.yaml").write_text(
        "media:\n  - {name: a, type: url, url: 'https://e.x/a.mp4'}\n"
        "media:\n  - {name: b, type: url, url: 'https://e.x/b.mp4'}\n"
    )
    monkeypatch.chdir(tmp_path)
    run = run_cli(["validate", "-f", str(manifests)])
    assert run.code == 1 and "m.yaml:3: " in run.err and "duplicate key 'media'" in run.err, run


def test_a_config_with_a_repeated_key_is_refused_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "chosen.yaml"
    config.write_text("region: cn-beijing\nprune: false\nprune: true\n")
    run = run_cli(["validate", "--config", str(config)])
    assert run.code == 1 and f"{config}:3: " in run.err and "duplicate key 'prune'" in run.err, run


# --- watch --prune and a manifest being rewritten ---------------------------------------------


def test_watch_prune_deletes_nothing_while_a_manifest_is_half_rewritten(
    project: Path, emulator: Emulator, daemons: list
) -> None:
    (project / "media" / "a.mp4").write_bytes(b"a" * 20_000)
    (project / "media" / "b.mp4").write_bytes(b"b" * 20_000)
    manifest = project / "manifests" / "m.yaml"
    whole = "".join(
        f"  - name: {n}\n    type: video\n    file: ../media/{n}.mp4\n    title: {n.upper()}\n" for n in "ab"
    )
    whole = "media:\n" + whole
    manifest.write_text(whole)
    d = start(daemons, project, emulator, "--prune")
    ids = eventually(
        lambda: (got := {n: r.remote_id for n, r in records(project).items()}) and all(got.values()) and got,
        what="both videos recorded",
    )
    assert len(ids) == 2
    seen = len(d.lines)

    half = whole.index("  - name: b")
    with open(manifest, "w") as f:  # rewritten in place, as a slow editor or a copy does
        f.write(whole[:half])
        f.flush()
        time.sleep(1.5)  # the writer's pause (longer than the watcher's debounce), not a wait for the daemon
        f.write(whole[half:])

    def settled_or_deleted() -> bool:
        return emulator.calls().get("DeleteVideo", 0) > 0 or any(
            "pruning may act" in line.get("msg", "") for line in d.lines[seen:]
        )

    eventually(settled_or_deleted, timeout=20, what="the settle window")
    assert emulator.calls().get("DeleteVideo", 0) == 0
    assert {n: r.remote_id for n, r in records(project).items()} == ids
    rc, _ = d.stop()
    assert rc == 0


# --- register items and prune ----------------------------------------------------------------


def test_pruning_a_register_item_keeps_the_users_object_unless_it_says_delete_source(ws: Workspace) -> None:
    url = ws.seed_object("archive/old.mp4", mp4(2500, b"a"))
    other = {"name": "keep", "type": "url", "url": ws.url("/src/k.mp4", mp4(1000, b"k")), "title": "K"}
    ws.manifest([other, {"name": "archive", "type": "register", "file_url": url, "title": "Archive"}])
    assert ws.apply().code == 0
    ws.manifest([other])

    run = ws.apply("--prune")
    assert run.code == 0, run
    assert "on_delete: delete-source" in run.out + run.err and "OSS object" in run.out + run.err, run
    assert ws.calls().get("DeleteVideo", 0) == 0 and "archive" in ws.status()
    assert any(o["key"] == "archive/old.mp4" for o in ws.vod()["objects"])

    # Said explicitly on the item (and recorded by an apply), the prune goes ahead.
    ws.manifest(
        [
            other,
            {
                "name": "archive",
                "type": "register",
                "file_url": url,
                "title": "Archive",
                "on_delete": "delete-source",
            },
        ]
    )
    assert ws.apply().code == 0
    ws.manifest([other])
    assert ws.apply("--prune").code == 0
    assert ws.calls().get("DeleteVideo", 0) == 1 and "archive" not in ws.status()


# --- the emulator ------------------------------------------------------------------------------


def test_emulator_seed_links_are_not_served_and_its_state_is_private(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / ".git").mkdir()
    secret = tmp_path / "id_rsa"
    secret.write_bytes(b"-----BEGIN PRIVATE KEY----- s3cr3t-bytes")
    seed = tmp_path / "manifests" / "emulator-seed" / "public"
    seed.mkdir(parents=True)
    (seed / "ok.mp4").write_bytes(mp4(500))
    (seed / "key.mp4").symlink_to(secret)
    (seed / "dir").symlink_to(tmp_path)  # a directory link: its files are not walked either
    (tmp_path / "manifests" / "m.yaml").write_text("media: []\n")
    monkeypatch.chdir(tmp_path)
    run = run_cli(
        [
            "plan",
            "--refresh",
            "--emulator",
            "--emulator-port",
            "0",
            "--state",
            str(tmp_path / "s" / "state.db"),
        ]
    )
    assert run.code == 0, run
    data_dir = tmp_path / "s" / "emulator"
    stored = b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
    assert b"s3cr3t-bytes" not in stored and b"BEGIN PRIVATE KEY" not in stored
    assert b"ok.mp4" in stored and b"key.mp4" not in stored
    snapshot = data_dir / "state.json"
    assert snapshot.is_file() and stat.S_IMODE(snapshot.stat().st_mode) == 0o600


@pytest.mark.parametrize("seconds", ["NaN", "Infinity", "-Infinity", "1e308"])
def test_emulator_advance_refuses_values_that_would_break_its_clock(emulator: Emulator, seconds: str) -> None:
    request = urllib.request.Request(
        emulator.url + "/_emulator/advance",
        data=f'{{"seconds": {seconds}}}'.encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 400
    assert emulator.advance(60) > 0  # still a working clock


# --- configs that do not parse -----------------------------------------------------------------


@pytest.mark.parametrize(
    "secret_line",
    [
        "  access_key_secret: *Sup3rS3cretValue\n",  # an alias name: "found undefined alias ..."
        "  access_key_secret: !Sup3rS3cretValue x\n",  # a tag: "could not determine a constructor ..."
        '  access_key_secret: "Sup3rS3cretValue\\q"\n',  # a bad escape
    ],
)
def test_a_config_yaml_error_never_quotes_the_secret(tmp_path: Path, secret_line: str) -> None:
    config = tmp_path / "chosen.yaml"
    config.write_text("credentials:\n  access_key_id: LTAIexample\n" + secret_line)
    os.chmod(config, 0o600)
    run = run_cli(["validate", "--config", str(config)])
    assert run.code == 1 and f"{config}:3" in run.err, run
    assert "Sup3rS3cretValue" not in run.out + run.err
    assert "readable by group or others" not in run.err


def test_a_world_readable_config_that_does_not_parse_reports_the_permission_first(tmp_path: Path) -> None:
    config = tmp_path / "chosen.yaml"
    config.write_text("credentials:\n  access_key_id: LTAIexample\n  access_key_secret: s3cr3t\nregion: [\n")
    os.chmod(config, 0o644)
    run = run_cli(["validate", "--config", str(config)])
    assert run.code == 1, run
    assert "readable by group or others" in run.err and "chmod 600" in run.err
    assert run.err.index("chmod 600") < run.err.index("invalid YAML")


# --- the state file ----------------------------------------------------------------------------


def _state_with_one_record(path: Path) -> None:
    from vodsync.state.store import Record, RecordStatus, StateStore

    with StateStore.open(path) as store:
        store.put(Record(name="a", kind="video", status=RecordStatus.READY, source="/x", remote_id="v1"))


@pytest.mark.parametrize(
    ("column", "value"), [("metadata", "[1, 2]"), ("options", '"text"'), ("intent", "7")]
)
def test_a_json_column_of_the_wrong_type_is_a_clear_error(
    tmp_path: Path, monkeypatch, column: str, value: str
) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "m.yaml").write_text("media: []\n")
    state = tmp_path / "state.db"
    _state_with_one_record(state)
    with sqlite3.connect(state) as db:
        db.execute(f"UPDATE records SET {column} = ?", (value,))
    monkeypatch.chdir(tmp_path)
    for command in (["status"], ["plan"]):
        run = run_cli([*command, "--state", str(state)])
        assert run.code == 1 and "Traceback" not in run.err, run
        assert f"record 'a' has an unreadable {column} column: expected a JSON object" in run.err, run


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a private read-only mount")
def test_plan_and_status_read_a_state_on_a_read_only_mount(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "m.yaml").write_text("media: []\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    _state_with_one_record(ro / "state.db")
    vodsync = [sys.executable, "-m", "vodsync"]
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user and mount namespaces are not available here")
    for command in ("status", "plan"):
        script = f'mount --bind -o ro "{ro}" "{ro}" && exec "$@"'
        run = subprocess.run(
            ["unshare", "-rm", "sh", "-c", script, "sh", *vodsync, command, "--state", str(ro / "state.db")],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
        assert run.returncode == 0, (command, run.stderr)
        assert "a" in run.stdout and "Traceback" not in run.stderr


# --- /metrics ----------------------------------------------------------------------------------


def test_an_idle_half_sent_request_to_metrics_is_dropped() -> None:
    from vodsync.daemon.metrics import Health, Metrics, MetricsServer

    server = MetricsServer(Metrics(), Health(600), read_timeout=0.5)
    server.start()
    try:
        host, port = server.address
        idle = [socket.create_connection((host, port), timeout=10) for _ in range(3)]
        for s in idle:
            s.sendall(b"GET /metr")  # and never the rest
        for s in idle:
            assert s.recv(100) == b"", "the server must close an idle half request"  # not socket.timeout
            s.close()
        with urllib.request.urlopen(server.url + "/healthz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.stop()


# --- URLs with credentials ------------------------------------------------------------------------


def test_a_url_password_is_fetched_with_but_never_stored_shown_or_logged(ws: Workspace) -> None:
    plain = ws.url("/private/t.mp4", mp4(1500, b"t"))
    with_password = plain.replace("http://", "http://bob:Hunter2Secret@", 1)
    ws.manifest([{"name": "t", "type": "url", "url": with_password, "title": "T"}])
    runs = [ws.cli("plan", "--json"), ws.apply("--log-level", "debug", "--log-format", "json")]
    assert runs[1].code == 0, runs[1]
    assert any(j["UploadURL"] == with_password for j in ws.vod()["url_jobs"])  # the service got it whole
    runs += [ws.cli("plan", "--json"), ws.cli("status", "--json"), ws.cli("plan", "--refresh")]
    for run in runs:
        assert "Hunter2Secret" not in run.out + run.err, run
    stored = b"".join(p.read_bytes() for p in ws.state.parent.glob("state.db*") if p.is_file())
    assert b"Hunter2Secret" not in stored
    assert ws.records()["t"]["source"] == plain.replace("http://", "http://***@", 1)
    # A new password alone is not a new source: nothing to do.
    ws.manifest(
        [{"name": "t", "type": "url", "url": with_password.replace("Hunter2", "Other9"), "title": "T"}]
    )
    assert ws.cli("plan", "--json").json()["changes"] == []


def test_an_unhashable_type_with_defaults_is_a_located_problem(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "m.yaml").write_text("defaults: {title: T}\nmedia:\n  - {name: a, type: []}\n")
    run = run_cli(["validate", "-f", str(manifests)])
    assert run.code == 1 and "m.yaml:3" in run.err and "Traceback" not in run.err, run


def test_replacing_a_register_items_object_keeps_the_old_object(ws: Workspace) -> None:
    first = ws.seed_object("x/1.mp4", mp4(800))
    ws.manifest([{"name": "r", "type": "register", "file_url": first, "title": "R"}])
    assert ws.apply().code == 0
    old = ws.status()["r"]["remote_id"]
    ws.manifest(
        [{"name": "r", "type": "register", "file_url": ws.seed_object("x/2.mp4", mp4(900)), "title": "R"}]
    )
    run = ws.apply()
    assert run.code == 0 and "on_delete: delete-source" in run.out + run.err, run
    assert ws.calls().get("DeleteVideo", 0) == 0
    assert old in {v["VideoId"] for v in ws.vod()["videos"]} and ws.status()["r"]["remote_id"] != old
    assert {"x/1.mp4", "x/2.mp4"} <= {o["key"] for o in ws.vod()["objects"]}
