"""What a person meets at the command line (issue 11): wrong credentials, flags, plans that say
what changes, honest housekeeping, and the smaller things. Real CLI, real SDKs, the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("clikit")
from clikit import ENV, Workspace, mp4  # noqa: E402
from clirun import run_cli  # noqa: E402

from vodsync.cloud.retry import scrub  # noqa: E402
from vodsync.logs import redact  # noqa: E402

pytest_plugins = ["clikit"]  # the `ws` fixture

# ------------------------------------------------------------- 5. wrong credentials fail fast


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "not-the-secret"}, "InvalidAccessKeySecret"),
        ({"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIunknownkey000"}, "InvalidAccessKeyId.NotFound"),
    ],
    ids=["wrong-secret", "unknown-key"],
)
def test_refused_credentials_stop_the_run_at_the_first_call_with_one_message(
    ws: Workspace, env: dict[str, str], code: str
) -> None:
    ws.manifest(ws.five_kinds())
    before = ws.calls()
    run = ws.cli("apply", env=env)
    assert run.code == 1, run
    # One message, naming the code and what to check; no per-item failures, no SDK log lines.
    assert run.err.count(code) == 1, run
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in run.err, run
    assert "ServerException" not in run.err and "aliyunsdkcore" not in run.err, run
    assert "***" not in run.err + run.out, run
    assert "failed" not in run.out, run
    rpc = {k: v for k, v in (ws.calls() - before).items() if not k.startswith("oss:")}
    assert sum(rpc.values()) == 1, f"only the first call is sent: {rpc}"
    # Nothing was created, so nothing is left `creating` for the next run to untangle.
    assert ws.status() == {}
    again = ws.cli("plan")
    assert "resume" not in again.out and "5 to create" in again.out, again
    good = ws.apply()
    assert good.code == 0, good
    assert len(ws.vod()["videos"]) == 3  # intro, trailer, archive: no duplicates, nothing lost


def test_a_ram_refusal_stops_the_run_and_leaves_no_intent(ws: Workspace) -> None:
    ws.file("media/a.mp4", mp4(500))
    ws.file("media/b.mp4", mp4(600))
    ws.manifest([{"name": "a", "type": "video", "file": "media/a.mp4"},
                 {"name": "b", "type": "video", "file": "media/b.mp4"}])
    ws.emulator.set_faults([{"match": "CreateUploadVideo", "error": "Forbidden.RAM"}])
    run = ws.cli("apply", "--concurrency", "1")
    assert run.code == 1, run
    assert run.err.count("Forbidden.RAM") == 1 and "RAM policy" in run.err, run
    assert ws.calls()["CreateUploadVideo"] == 1
    assert ws.status() == {}


def test_the_scrubbers_keep_ordinary_words_and_still_hide_secret_values() -> None:
    text = "InvalidAccessKeySecret: The AccessKeySecret is incorrect. Please check your AccessKeyId."
    assert redact(text) == text
    assert scrub(text) == text
    assert redact("AccessKeySecret: hunter2x") == "AccessKeySecret: ***"
    assert scrub("access_key_secret=hunter2x&b=1") == "access_key_secret=***&b=1"
    assert redact('{"SecurityToken": "CAIStoken"}') == '{"SecurityToken": "***"}'


# ------------------------------------------------------------------------ 6. flags and input


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["apply", "--concurrency", "0"], "--concurrency: must be at least 1, got 0"),
        (["apply", "--concurrency", "1000"], "--concurrency: must be at most 256"),
        (["apply", "--part-size", "1000"], "--part-size: must be at least 102400"),
        (["apply", "--multipart-threshold", "0"], "--multipart-threshold: must be at least 1"),
        (["apply", "--wait", "-1"], "--wait: must be at least 0"),
        (["plan", "--max-delete", "-5"], "--max-delete: must be at least 0, got -5"),
        (["apply", "--max-delete", "-5"], "--max-delete: must be at least 0, got -5"),
        (["plan", "--emulator-port", "70000"], "--emulator-port: must be at most 65535"),
        (["watch", "--interval", "0"], "--interval: must be greater than 0"),
        (["emulator", "--port", "-1"], "--port: must be at least 0"),
        (["emulator", "--sts-ttl", "0"], "--sts-ttl: must be at least 1"),
        (["emulator", "--transcode-seconds", "-2"], "--transcode-seconds: must be at least 0"),
        (["apply", "--concurrency", "many"], "--concurrency: expected an integer, got 'many'"),
        (["plan", "--pr"], "unrecognized arguments: --pr"),
        (["apply", "--concur", "2"], "unrecognized arguments: --concur"),
        (["plan", "--no-such-flag"], "unrecognized arguments"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_usage_is_refused_with_exit_1_never_2(ws: Workspace, argv: list[str], words: str) -> None:
    before = ws.calls()
    run = ws.cli(*argv, manifests=False, state=False, endpoint=False) if argv[0] != "apply" else ws.cli(*argv)
    assert run.code == 1, run
    assert words in run.err, run
    assert ws.calls() == before
    assert not ws.state.exists()


@pytest.mark.parametrize(("key", "value", "words"), [
    ("concurrency", 0, "concurrency: must be at least 1, got 0"),
    ("max_delete", -5, "max_delete: must be at least 0, got -5"),
])
def test_config_keys_have_the_flags_ranges(ws: Workspace, key: str, value: int, words: str) -> None:
    Path("vodsync.yaml").write_text(f"{key}: {value}\n")
    run = ws.cli("plan")
    assert run.code == 1, run
    assert words in run.err, run


def test_apply_without_yes_and_without_a_terminal_refuses(ws: Workspace) -> None:
    ws.file("media/a.mp4", mp4(500))
    ws.manifest([{"name": "a", "type": "video", "file": "media/a.mp4"}])
    argv = [sys.executable, "-m", "vodsync", "apply", "-f", str(ws.manifests), "--state", str(ws.state),
            "--endpoint", ws.emulator.url]
    before = ws.calls()
    proc = subprocess.run(argv, env={**os.environ, **ENV}, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60, cwd=ws.root)
    assert proc.returncode == 1, proc
    assert "refusing to apply without confirmation: pass --yes" in proc.stderr, proc
    assert ws.calls() == before
    assert ws.status() == {}


# ------------------------------------------------------------------- 7. plans say what changes


def test_plan_shows_old_and_new_values_and_what_a_create_sets(ws: Workspace) -> None:
    ws.file("media/intro.mp4", mp4(500))
    ws.manifest([{"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro",
                  "tags": ["a"]}])
    created = ws.cli("plan")
    assert '      file: "manifests/media/intro.mp4"' in created.out.splitlines(), created
    assert '      title: "Intro"' in created.out.splitlines(), created
    assert '      tags: ["a"]' in created.out.splitlines(), created
    assert ws.apply().code == 0
    ws.manifest([{"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro (final)",
                  "tags": ["a", "b"], "description": "new"}])
    run = ws.cli("plan")
    lines = run.out.splitlines()
    assert '      title: "Intro" → "Intro (final)"' in lines, run
    assert '      tags: ["a"] → ["a", "b"]' in lines, run
    assert '      description: (unset) → "new"' in lines, run
    data = ws.cli("plan", "--json").json()
    assert data["format_version"] == 1
    (change,) = data["changes"]
    assert change["before"] == {"title": "Intro", "description": None, "tags": ["a"]}
    assert change["after"] == {"title": "Intro (final)", "description": "new", "tags": ["a", "b"]}


def test_plan_json_on_an_invalid_manifest_is_a_json_error_object(ws: Workspace) -> None:
    (ws.manifests / "broken.yaml").write_text("media:\n  - name: a\n    type: video\n    file: x.mp4\n"
                                              "    titel: A\n")
    run = ws.cli("plan", "--json")
    assert run.code == 1, run
    data = run.json()
    assert data["format_version"] == 1
    problems = data["error"]["problems"]
    assert {"file": "manifests/broken.yaml", "line": 5, "field": "a.titel"}.items() <= problems[0].items(), data
    assert "did you mean title" in problems[0]["message"]


# ------------------------------------------------------------------------ 9. smaller things


def test_error_locations_open_from_the_working_directory(ws: Workspace, tmp_path_factory) -> None:
    (ws.manifests / "sub").mkdir()
    (ws.manifests / "sub" / "bad.yaml").write_text("media:\n  - name: a\n    type: vidoe\n")
    run = ws.cli("validate")
    assert run.code == 1
    assert "manifests/sub/bad.yaml:3" in run.err, run
    assert Path("manifests/sub/bad.yaml").is_file()
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    os.chdir(elsewhere)
    run = ws.cli("validate")
    assert f"{ws.manifests}/sub/bad.yaml:3" in run.err, run  # outside the working directory: absolute


def test_status_names_the_file_of_a_drop_folder_item(ws: Workspace) -> None:
    drop = ws.root / "drop"
    drop.mkdir()
    (drop / "clip.mp4").write_bytes(mp4(700))
    ws.manifest([])
    Path("vodsync.yaml").write_text(f"drop_folders:\n  - {{path: {drop}, label: inbox, stable_seconds: 0}}\n")
    run = ws.cli("watch", "--once", "--config", "vodsync.yaml")
    assert run.code == 0, run
    status = ws.cli("status")
    (line,) = [x for x in status.out.splitlines() if x.startswith("drop/inbox/")]
    assert "(clip.mp4)" in line, status
    assert ws.status()[line.split()[0]]["source"].endswith("clip.mp4")


def test_plan_and_apply_log_text_unless_json_is_asked_for(ws: Workspace) -> None:
    ws.file("media/a.mp4", mp4(500))
    ws.manifest([{"name": "a", "type": "video", "file": "media/a.mp4"}])
    run = ws.apply()
    assert run.code == 0, run
    logged = [x for x in run.err.splitlines() if "vodsync.apply" in x]
    assert logged and not any(x.startswith("{") for x in logged), run.err
    ws.manifest([{"name": "a", "type": "video", "file": "media/a.mp4", "title": "A2"}])
    run = ws.cli("apply", "--log-format", "json")
    assert run.code == 0 and run.err.strip().startswith("{"), run.err


def test_config_errors_say_did_you_mean(ws: Workspace) -> None:
    Path("vodsync.yaml").write_text("max_delet: 3\ndaemon:\n  intervall_seconds: 5\n")
    run = ws.cli("plan")
    assert run.code == 1
    assert "vodsync.yaml:1: max_delet: unknown field for the config; did you mean max_delete?" in run.err, run
    assert "vodsync.yaml:3: daemon.intervall_seconds: unknown field for daemon; did you mean interval_seconds?" \
        in run.err, run


def test_the_readme_writes_the_schema_file_it_points_editors_at(ws: Workspace) -> None:
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (target,) = re.findall(r"vodsync schema > (\S+)", readme)
    (pointer,) = re.findall(r"\$schema=(\S+)", readme)
    assert Path(target).name == pointer, "the comment names the file the command writes, beside the manifests"
    run = ws.cli("schema")
    assert run.code == 0 and run.json()["title"] == "vodsync manifest"


def test_an_unknown_flag_is_reported_by_its_command_with_the_likely_one() -> None:
    run = run_cli(["apply", "--concurency", "2"])
    assert run.code == 1, run
    assert "usage: vodsync apply" in run.err, "the usage shown is the command's, not the top level's"
    assert "unrecognized arguments: --concurency; did you mean --concurrency?" in run.err
    assert "did you mean" not in run_cli(["plan", "--bogus"]).err, "no guess for what resembles nothing"


def test_watch_once_with_refused_credentials_claims_no_finished_pass(ws: Workspace) -> None:
    ws.file("media/a.mp4", mp4(500))
    ws.manifest([{"name": "a", "type": "video", "file": "media/a.mp4"}])
    run = ws.cli("watch", "--once", "--log-format", "text", env={"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "wrong"})
    assert run.code == 1, run
    assert "InvalidAccessKeySecret" in run.err, run
    assert "pass done" not in run.err, "a pass the error ended did not carry its actions out"
    assert "pass ended by the error above: 1 action(s) were planned" in run.err, run
