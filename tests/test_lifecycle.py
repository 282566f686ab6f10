"""End-to-end: the Terraform-grade lifecycle of issue 15, through the CLI against the emulator.

Import (`vodsync import`, `import_id:`), renames (`moved:`, `state mv`), the
state commands, `--target`/`--exclude`, saved plans (`plan -out`, `apply FILE`),
the Markdown plan for pull requests, shell completion and the help texts.
Media "made elsewhere" is created with the real SDK and oss2, as the console or
an older script would.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import oss2
import pytest
from aliyunsdkvod.request.v20170321.CreateUploadAttachedMediaRequest import CreateUploadAttachedMediaRequest
from aliyunsdkvod.request.v20170321.CreateUploadImageRequest import CreateUploadImageRequest
from aliyunsdkvod.request.v20170321.CreateUploadVideoRequest import CreateUploadVideoRequest

pytest.register_assert_rewrite("clikit")
from clikit import PNG, VTT, Workspace, mp4  # noqa: E402
from test_cli_refresh import sdk  # noqa: E402

pytest_plugins = ["clikit"]  # the `ws` fixture

UPLOADS = ("CreateUploadVideo", "CreateUploadImage", "CreateUploadAttachedMedia", "RefreshUploadVideo", "oss:PUT",
           "oss:POST")


def made_elsewhere(client: Any, request_cls: type, data: bytes, **params: Any) -> str:
    """Create media and upload its bytes with the SDK and oss2 (not vodsync); returns its ID."""
    created = sdk(client, request_cls, **params)
    address = json.loads(base64.b64decode(created["UploadAddress"]))
    auth = json.loads(base64.b64decode(created["UploadAuth"]))
    # Upload tokens must sign V4 (OSS refuses V1 on new buckets), with the bucket's region.
    sts = oss2.StsAuth(auth["AccessKeyId"], auth["AccessKeySecret"], auth["SecurityToken"], auth_version="v4")
    bucket = oss2.Bucket(sts, address["Endpoint"], address["Bucket"], region=auth["Region"])
    bucket.put_object(address["FileName"], data)
    return created.get("VideoId") or created.get("ImageId") or created["MediaId"]


def plan_changes(ws: Workspace, *extra: str) -> list[tuple[str, str, str]]:
    run = ws.cli("plan", "--json", *extra)
    assert run.code == 0, run
    return [(c["action"], c["name"], c["reason"]) for c in run.json()["changes"]]


def uploads(ws: Workspace, before: Any) -> dict[str, int]:
    return {k: v for k, v in ws.writes(before).items() if k in UPLOADS}


def videos(ws: Workspace) -> dict[str, dict]:
    return {v["VideoId"]: v for v in ws.vod()["videos"]}


# ------------------------------------------------------------------ import


def test_import_adopts_a_video_made_with_the_sdk_and_plans_only_the_title(ws: Workspace, vod_sdk_client: Any) -> None:
    data = mp4(3000)
    vid = made_elsewhere(vod_sdk_client, CreateUploadVideoRequest, data, Title="Old title", FileName="intro.mp4")
    ws.file("media/intro.mp4", data)
    ws.manifest([{"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro"}])

    before = ws.calls()
    run = ws.cli("import", "intro", vid, "--state", str(ws.state), "-f", str(ws.manifests),
                 "--endpoint", ws.emulator.url)
    assert run.code == 0, run
    assert f"Imported intro as video {vid}" in run.out
    assert not ws.writes(before), "an import makes no write call"
    assert ws.status()["intro"]["remote_id"] == vid

    assert plan_changes(ws) == [("update", "intro", "title changed")]  # the same bytes: no replace
    before = ws.calls()
    run = ws.apply()
    assert run.code == 0, run
    assert uploads(ws, before) == {}, "nothing uploaded"
    assert list(videos(ws)) == [vid] and videos(ws)[vid]["Title"] == "Intro"
    assert plan_changes(ws) == []


def test_import_shows_a_size_mismatch_as_a_replace_and_refuses_bad_requests(ws: Workspace,
                                                                             vod_sdk_client: Any) -> None:
    vid = made_elsewhere(vod_sdk_client, CreateUploadVideoRequest, mp4(3000), Title="Intro", FileName="a.mp4")
    ws.file("media/intro.mp4", mp4(5000))
    ws.manifest([{"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro"}])

    def imp(*argv: str) -> Any:
        return ws.cli("import", *argv, "--state", str(ws.state), "-f", str(ws.manifests),
                      "--endpoint", ws.emulator.url)

    missing = imp("nosuch", vid)
    assert missing.code == 1 and "nosuch is not an item of the manifests" in missing.err, missing
    gone = imp("intro", "0" * 32)
    assert gone.code == 1 and f"no video with ID {'0' * 32} exists" in gone.err, gone
    assert imp("intro", vid).code == 0
    again = imp("intro", vid)
    assert again.code == 1 and "intro is already recorded" in again.err, again

    [(action, name, reason)] = plan_changes(ws)
    assert (action, name) == ("replace", "intro")
    assert "local file differs from the imported media" in reason and "3000 B" in reason and "5000 B" in reason


def test_import_id_in_a_manifest_is_planned_as_import_and_recorded_by_apply(ws: Workspace,
                                                                            vod_sdk_client: Any) -> None:
    image = made_elsewhere(vod_sdk_client, CreateUploadImageRequest, PNG, ImageType="default", ImageExt="png",
                           Title="Logo")
    subs = made_elsewhere(vod_sdk_client, CreateUploadAttachedMediaRequest, VTT, BusinessType="subtitle",
                          MediaExt="vtt", Title="Subtitles")
    ws.file("media/logo.png", PNG)
    ws.file("media/en.vtt", VTT)
    ws.manifest([{"name": "logo", "type": "image", "file": "media/logo.png", "title": "Logo", "import_id": image},
                 {"name": "subs", "type": "attached", "file": "media/en.vtt", "business_type": "subtitle",
                  "title": "English", "import_id": subs}])

    assert plan_changes(ws) == [("import", "logo", f"import {image}"), ("import", "subs", f"import {subs}")]
    before = ws.calls()
    run = ws.apply()
    assert run.code == 0, run
    assert ws.writes(before) == {}, "importing is reading and recording"
    assert {n: r["remote_id"] for n, r in ws.status().items()} == {"logo": image, "subs": subs}
    assert [i["ImageId"] for i in ws.vod()["images"]] == [image]
    assert plan_changes(ws) == [("update", "subs", "title changed")]


# ------------------------------------------------------------------ renames


def test_a_moved_rename_keeps_the_video_id_and_uploads_nothing(ws: Workspace) -> None:
    ws.file("media/intro.mp4", mp4(3000))
    item = {"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro"}
    ws.manifest([item])
    assert ws.apply().code == 0
    vid = ws.status()["intro"]["remote_id"]

    path = ws.manifest([{**item, "name": "episodes/intro"}])
    with path.open("a") as f:
        f.write("moved:\n  - {from: intro, to: episodes/intro}\n")
    text = ws.cli("plan", "--prune")
    assert "moved intro → episodes/intro" in text.out, text
    assert plan_changes(ws, "--prune") == [("move", "episodes/intro", "moved intro → episodes/intro")]

    before = ws.calls()
    run = ws.apply("--prune")
    assert run.code == 0, run
    assert ws.writes(before) == {}, "a move is a state change only"
    assert {n: r["remote_id"] for n, r in ws.status().items()} == {"episodes/intro": vid}
    assert list(videos(ws)) == [vid]
    assert plan_changes(ws, "--prune") == [], "the moved: entry may stay in the manifest"


def test_state_mv_renames_a_record_from_the_cli(ws: Workspace) -> None:
    ws.file("media/intro.mp4", mp4(3000))
    item = {"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro"}
    ws.manifest([item])
    assert ws.apply().code == 0
    vid = ws.status()["intro"]["remote_id"]
    ws.manifest([{**item, "name": "intro-2024"}])
    assert {a for a, _, _ in plan_changes(ws, "--prune")} == {"create", "delete"}

    run = ws.cli("state", "mv", "intro", "intro-2024", "--state", str(ws.state))
    assert run.code == 0, run
    assert "Moved intro → intro-2024" in run.out
    assert plan_changes(ws, "--prune") == []
    assert ws.status()["intro-2024"]["remote_id"] == vid
    taken = ws.cli("state", "mv", "nosuch", "intro-2024", "--state", str(ws.state))
    assert taken.code == 1 and "'nosuch' is not recorded" in taken.err, taken


def test_the_daemon_carries_out_a_move_and_an_import_without_uploading(ws: Workspace, vod_sdk_client: Any) -> None:
    ws.file("media/intro.mp4", mp4(3000))
    item = {"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro"}
    ws.manifest([item])
    assert ws.apply().code == 0
    vid = ws.status()["intro"]["remote_id"]
    image = made_elsewhere(vod_sdk_client, CreateUploadImageRequest, PNG, ImageType="default", ImageExt="png",
                           Title="Logo")
    ws.file("media/logo.png", PNG)
    path = ws.manifest([{**item, "name": "intro-v2"},
                        {"name": "logo", "type": "image", "file": "media/logo.png", "title": "Logo",
                         "import_id": image}])
    with path.open("a") as f:
        f.write("moved:\n  - {from: intro, to: intro-v2}\n")

    before = ws.calls()
    run = ws.cli("watch", "--once", "--prune")
    assert run.code == 0, run
    assert uploads(ws, before) == {} and "DeleteVideo" not in ws.writes(before)
    assert {n: r["remote_id"] for n, r in ws.status().items()} == {"intro-v2": vid, "logo": image}


# ------------------------------------------------------------------ state commands


def test_state_rm_forgets_a_protected_item_that_left_the_manifests(ws: Workspace) -> None:
    ws.file("media/intro.mp4", mp4(3000))
    ws.file("media/outro.mp4", mp4(2000, b"o"))
    keep = {"name": "intro", "type": "video", "file": "media/intro.mp4"}
    ws.manifest([keep, {"name": "outro", "type": "video", "file": "media/outro.mp4", "protect": True}])
    assert ws.apply().code == 0
    outro = ws.status()["outro"]["remote_id"]
    ws.manifest([keep])
    plan = ws.cli("plan", "--json", "--prune").json()
    assert [c["name"] for c in plan["kept"]] == ["outro"], "a protected record shows up in every plan"

    listed = ws.cli("state", "list", "--state", str(ws.state))
    assert listed.out.split() == ["intro", "outro"]
    as_json = ws.cli("state", "list", "--json", "--state", str(ws.state)).json()
    assert {r["name"]: r["remote_id"] for r in as_json}["outro"] == outro
    shown = ws.cli("state", "show", "outro", "--json", "--state", str(ws.state))
    assert shown.json()["remote_id"] == outro and shown.json()["protect"] is True

    before = ws.calls()
    run = ws.cli("state", "rm", "outro", "--state", str(ws.state))
    assert run.code == 0, run
    assert f"Forgot outro (video {outro})" in run.out
    assert ws.calls() == before, "forgetting makes no call"
    assert outro in videos(ws), "the media is left untouched"
    plan = ws.cli("plan", "--json", "--prune").json()
    assert plan["kept"] == [] and plan["changes"] == []
    unknown = ws.cli("state", "rm", "outro", "--state", str(ws.state))
    assert unknown.code == 1 and "outro is not recorded" in unknown.err


# ------------------------------------------------------------------ targets


def test_target_and_exclude_narrow_plan_and_prune(ws: Workspace) -> None:
    media = []
    for name in ("a", "b", "c"):
        ws.file(f"media/{name}.mp4", mp4(2000, name.encode()))
        media.append({"name": f"s1/{name}", "type": "video", "file": f"media/{name}.mp4", "title": name})
    ws.manifest(media)
    assert ws.apply().code == 0
    ids = {n: r["remote_id"] for n, r in ws.status().items()}
    ws.manifest([{**media[0], "title": "A, renamed"}])  # s1/b and s1/c left the manifests

    partial = ws.cli("plan", "--prune", "--target", "s1/b")
    assert "Partial plan: only items matching s1/b." in partial.out, partial
    assert plan_changes(ws, "--prune", "--target", "s1/b") == [("delete", "s1/b", "removed from manifests")]
    assert ws.cli("plan", "--json", "--prune", "--target", "s1/b").json()["partial"] == "only items matching s1/b"
    assert plan_changes(ws, "--prune", "--target", "s1/*", "--exclude", "s1/c", "--exclude", "s1/a") == [
        ("delete", "s1/b", "removed from manifests")]

    run = ws.apply("--prune", "--target", "s1/b")
    assert run.code == 0, run
    assert set(videos(ws)) == {ids["s1/a"], ids["s1/c"]}, "only the targeted item was pruned"
    assert videos(ws)[ids["s1/a"]]["Title"] == "a", "an item outside the target is not updated"

    run = ws.apply("--prune", "--exclude", "s1/c")
    assert run.code == 0, run
    assert set(videos(ws)) == {ids["s1/a"], ids["s1/c"]}
    assert videos(ws)[ids["s1/a"]]["Title"] == "A, renamed"


# ------------------------------------------------------------------ saved plans


def test_a_saved_plan_is_refused_after_a_manifest_edit_and_applied_exactly_otherwise(ws: Workspace) -> None:
    ws.file("media/intro.mp4", mp4(3000))
    item = {"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro"}
    ws.manifest([item])
    assert ws.apply().code == 0
    vid = ws.status()["intro"]["remote_id"]
    ws.manifest([{**item, "title": "Reviewed title"}])
    plan_file = ws.root / "plan.json"
    run = ws.cli("plan", "-out", str(plan_file))
    assert run.code == 0, run
    doc = json.loads(plan_file.read_text())
    assert doc["format"] == "vodsync-plan" and doc["format_version"] == 1
    assert [(a["action"], a["name"], a["fields"]) for a in doc["actions"]] == [("update", "intro", ["title"])]
    assert plan_file.stat().st_mode & 0o077 == 0
    assert "emulator-secret" not in plan_file.read_text()

    ws.manifest([{**item, "title": "Edited after review"}])
    before = ws.calls()
    refused = ws.cli("apply", str(plan_file))
    assert refused.code == 1, refused
    assert "refusing to apply" in refused.err and "the manifests" in refused.err and "nothing was applied" in refused.err
    assert ws.writes(before) == {}
    assert videos(ws)[vid]["Title"] == "Intro"

    ws.manifest([{**item, "title": "Reviewed title"}])  # back to what was reviewed: the same inputs
    run = ws.cli("apply", str(plan_file))
    assert run.code == 0, run
    assert videos(ws)[vid]["Title"] == "Reviewed title"
    stale = ws.cli("apply", str(plan_file))
    assert stale.code == 1 and "the state" in stale.err, "a plan applies once: the state it was made on is gone"


def test_a_saved_plan_refuses_a_changed_state_and_options_it_fixes(ws: Workspace) -> None:
    ws.file("media/intro.mp4", mp4(3000))
    ws.manifest([{"name": "intro", "type": "video", "file": "media/intro.mp4"}])
    plan_file = ws.root / "plan.json"
    assert ws.cli("plan", "-out", str(plan_file)).code == 0
    assert ws.cli("apply", str(plan_file), "--prune").code == 1
    assert ws.apply().code == 0  # the state changed under the plan
    run = ws.cli("apply", str(plan_file))
    assert run.code == 1 and "the state" in run.err and "changed since the plan was made" in run.err, run
    assert len(ws.vod()["videos"]) == 1


# ------------------------------------------------------------------ markdown


def test_markdown_plan_for_creates_updates_moves_and_deletes(ws: Workspace) -> None:
    for name in ("keep", "gone", "old"):
        ws.file(f"media/{name}.mp4", mp4(2000, name[0].encode()))
    base = [{"name": n, "type": "video", "file": f"media/{n}.mp4", "title": n} for n in ("keep", "gone", "old")]
    ws.manifest(base)
    assert ws.apply().code == 0
    gone = ws.status()["gone"]["remote_id"]
    ws.file("media/new.mp4", mp4(1500, b"n"))
    path = ws.manifest([
        {**base[0], "title": "Keep, retitled"},
        {**base[2], "name": "renamed"},
        {"name": "new", "type": "video", "file": "media/new.mp4"},
    ])
    with path.open("a") as f:
        f.write("moved:\n  - {from: old, to: renamed}\n")

    run = ws.cli("plan", "--format", "markdown", "--prune")
    assert run.code == 0, run
    body = run.out
    assert body.startswith("<!-- vodsync-plan -->\n### vodsync plan\n")
    assert "**Plan: 1 to create, 1 to update, 0 to replace, 1 to delete, 1 to move; 1.5 KiB to upload.**" in body
    assert "**1 deletion(s)**" in body and f"> - `gone` (video {gone})" in body
    details = body[body.index("<details>"):body.index("</details>")]
    assert "<summary>Details: 4 change(s)" in details and "```diff" in details
    for line in ("+ create   new", "~ update   keep", "- delete   gone", "→ move     renamed"):
        assert line in details, line
    assert "moved old → renamed" in details
    assert body.index("deletion(s)") < body.index("<details>"), "deletions are called out, not folded away"


# ------------------------------------------------------------------ CLI polish


def test_version_help_examples_and_completion_scripts(tmp_path: Path) -> None:
    from clirun import run_cli

    from vodsync import __version__
    from vodsync.cli import build_parser
    from vodsync.cli_help import subparsers_of

    assert run_cli(["--version"]).code == 0
    version = subprocess.run([sys.executable, "-m", "vodsync", "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"vodsync {__version__}"

    parser = build_parser()
    paths = []
    for name, sub in subparsers_of(parser).items():
        paths.append((name, sub))
        paths += [(f"{name} {n}", s) for n, s in subparsers_of(sub).items()]
    assert {"import", "state list", "state show", "state rm", "state mv", "completion"} <= {p for p, _ in paths}
    for path, sub in paths:
        text = sub.format_help()
        assert sub.description and sub.description.endswith("."), path
        assert f"\n  vodsync {path}" in text and "example" in text, f"{path} --help has no example"

    scripts = {}
    for shell in ("bash", "zsh", "fish"):
        run = run_cli(["completion", shell])
        assert run.code == 0, run
        scripts[shell] = tmp_path / f"vodsync.{shell}"
        scripts[shell].write_text(run.out)
    assert subprocess.run(["bash", "-n", str(scripts["bash"])], capture_output=True).returncode == 0

    def complete(*words: str) -> list[str]:
        line = " ".join(["vodsync", *words])
        script = (f"source {scripts['bash']}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; "
                  "_vodsync; printf '%s\\n' \"${COMPREPLY[@]}\"")
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
        return out.split()

    assert complete("st") == ["status", "state"]
    assert complete("state", "r") == ["rm"]
    assert complete("plan", "--format", "m") == ["markdown"]
    assert "--target" in complete("apply", "--t")
    for shell in ("zsh", "fish"):
        if shutil.which(shell):
            flag = "-n" if shell == "zsh" else "--no-execute"
            assert subprocess.run([shell, flag, str(scripts[shell])]).returncode == 0
