"""End-to-end: `vodsync import --discover` rebuilds a lost state (issue 15), through the CLI
against the emulator; and `vodsync state show --namespace`.

A library is applied, its state file lost, and discover finds every item's media again
(videos by ReferenceId, images and attached media by the markers in their UserData, URL
ingests by their URL, registrations by title) with read calls only, so the next plan has
nothing to do and an apply creates nothing. Two states on one account with the same item
names are told apart by their namespaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("clikit")
from clikit import PNG, VTT, Workspace, mp4  # noqa: E402

pytest_plugins = ["clikit"]  # the `ws` fixture

CREATES = ("CreateUploadVideo", "CreateUploadImage", "CreateUploadAttachedMedia", "UploadMediaByURL",
           "RegisterMedia", "RefreshUploadVideo")


def imp(ws: Workspace, *argv: str, state: Path | None = None) -> Any:
    return ws.cli("import", *argv, "--state", str(state or ws.state), "-f", str(ws.manifests),
                  "--endpoint", ws.emulator.url)


def namespace_of(ws: Workspace, state: Path) -> str:
    run = ws.cli("state", "show", "--namespace", "--state", str(state))
    assert run.code == 0, run
    return run.out.strip()


def applied(ws: Workspace, state: Path, *extra: str) -> dict[str, str]:
    """Apply into `state` (settled), check the plan is clean, then the remote ID of each item."""
    run = ws.cli("apply", "--wait", "20", "--state", str(state), *extra, state=False)
    assert run.code == 0, run
    plan = ws.cli("plan", "--detailed-exitcode", "--state", str(state), *extra, state=False)
    assert plan.code == 0, plan
    return remote_ids(state)


def remote_ids(state: Path) -> dict[str, str]:
    return {name: r["remote_id"] for name, r in _records(state).items()}


def _records(state: Path) -> dict[str, Any]:
    import sqlite3

    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return {r["name"]: dict(r) for r in con.execute("SELECT * FROM records")}
    finally:
        con.close()


def test_discover_rebuilds_a_lost_state_of_a_mixed_library(ws: Workspace) -> None:
    ws.manifest(ws.five_kinds())
    before_ids = applied(ws, ws.state)
    assert set(before_ids) == {"intro", "logo", "intro-subs", "trailer", "archive"}
    namespace = namespace_of(ws, ws.state)
    ws.state.unlink()

    before = ws.calls()
    run = imp(ws, "--discover")
    assert run.code == 0, run
    assert f"Discovering in namespace {namespace}:" in run.out
    assert "Recorded 5 of 5 items" in run.out, run
    assert not ws.writes(before), "discover makes no write call"
    assert remote_ids(ws.state) == before_ids
    assert namespace_of(ws, ws.state) == namespace, "the adopted namespace is recorded in the state"

    plan = ws.cli("plan", "--detailed-exitcode")
    assert plan.code == 0, plan
    before = ws.calls()
    run = ws.apply()
    assert run.code == 0, run
    assert {k: v for k, v in ws.writes(before).items() if k in CREATES} == {}, "apply creates nothing"
    vod = ws.vod()
    assert (len(vod["videos"]), len(vod["images"]), len(vod["attached"]), len(vod["url_jobs"])) == (3, 1, 1, 1)


def _library(ws: Workspace, fill: bytes) -> None:
    ws.file("media/intro.mp4", mp4(4000, fill))
    ws.file("media/logo.png", PNG)
    ws.file("media/intro.en.vtt", VTT)
    ws.manifest([
        {"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro"},
        {"name": "logo", "type": "image", "file": "media/logo.png", "title": "Logo"},
        {"name": "intro-subs", "type": "attached", "file": "media/intro.en.vtt", "business_type": "subtitle",
         "title": "Intro subtitles"},
    ])


def test_two_namespaces_on_one_account_are_refused_and_listed_then_one_is_picked(ws: Workspace) -> None:
    state_a, state_b, fresh = ws.root / "a.db", ws.root / "b.db", ws.root / "fresh.db"
    _library(ws, b"a")
    ids_a = applied(ws, state_a)
    _library(ws, b"b")
    ids_b = applied(ws, state_b)
    ns_a, ns_b = namespace_of(ws, state_a), namespace_of(ws, state_b)
    assert ns_a != ns_b and not set(ids_a.values()) & set(ids_b.values())

    refused = imp(ws, "--discover", state=fresh)
    assert refused.code == 1, refused
    assert ns_a in refused.err and ns_b in refused.err and "--namespace" in refused.err, refused
    assert not fresh.exists() or not _records(fresh), "nothing recorded"

    before = ws.calls()
    run = imp(ws, "--discover", "--namespace", ns_b, state=fresh)
    assert run.code == 0, run
    assert not ws.writes(before)
    assert remote_ids(fresh) == ids_b
    assert namespace_of(ws, fresh) == ns_b
    assert ws.cli("plan", "--detailed-exitcode", "--state", str(fresh), state=False).code == 0

    # A state that records a namespace discovers in it; another --namespace is refused.
    other = imp(ws, "--discover", "--namespace", ns_a, state=fresh)
    assert other.code == 1 and ns_b in other.err and ns_a in other.err, other


def test_discover_in_a_pinned_namespace_adopts_only_that_ones_media(ws: Workspace) -> None:
    state_a, state_b, fresh = ws.root / "a.db", ws.root / "b.db", ws.root / "fresh.db"
    _library(ws, b"a")
    ids_a = applied(ws, state_a)
    _library(ws, b"b")
    applied(ws, state_b)
    config = ws.root / "vodsync.yaml"
    config.write_text(f"namespace: {namespace_of(ws, state_a)}\n")
    run = imp(ws, "--discover", "--config", str(config), state=fresh)
    assert run.code == 0, run
    assert remote_ids(fresh) == ids_a


def test_import_arguments_are_checked(ws: Workspace) -> None:
    ws.manifest([])
    for argv, words in ((["import"], "give NAME and MEDIA_ID"),
                        (["import", "intro"], "give NAME and MEDIA_ID"),
                        (["import", "--discover", "intro"], "give no NAME or MEDIA_ID"),
                        (["import", "intro", "x", "--namespace", "ns"], "--namespace goes with --discover")):
        run = ws.cli(*argv, "--state", str(ws.state), "-f", str(ws.manifests))
        assert run.code == 1 and words in run.err and "usage:" in run.err, run


def test_state_show_namespace(ws: Workspace) -> None:
    missing = ws.cli("state", "show", "--namespace", "--state", str(ws.state))
    assert missing.code == 1 and "no state file" in missing.err, missing
    config = ws.root / "vodsync.yaml"
    config.write_text("namespace: team-a\n")
    ws.manifest([])
    applied(ws, ws.state, "--config", str(config))
    assert namespace_of(ws, ws.state) == "team-a"
    as_json = ws.cli("state", "show", "--namespace", "--json", "--state", str(ws.state))
    assert as_json.code == 0 and as_json.json() == {"namespace": "team-a"}, as_json
    bare = ws.cli("state", "show", "--state", str(ws.state))
    assert bare.code == 1 and "give NAME, or --namespace" in bare.err, bare


def test_discover_adopts_the_name_only_scheme_of_older_states(ws: Workspace) -> None:
    _library(ws, b"a")
    config = ws.root / "old.yaml"
    config.write_text("namespace: legacy\n")  # made the way states before namespaces made media
    ids = applied(ws, ws.state, "--config", str(config))
    ws.state.unlink()
    run = imp(ws, "--discover")
    assert run.code == 0 and "Discovering in namespace legacy:" in run.out, run
    assert remote_ids(ws.state) == ids
    assert ws.cli("plan", "--detailed-exitcode").code == 0


def test_discover_lists_what_it_cannot_find_and_keeps_what_is_recorded(ws: Workspace) -> None:
    _library(ws, b"a")
    applied(ws, ws.state)
    ws.file("media/new.png", PNG + b"new")
    library = ws.manifests / "library.yaml"
    library.write_text(library.read_text() + "- name: new\n  type: image\n  file: media/new.png\n  title: New\n")
    run = imp(ws, "--discover")
    assert run.code == 0, run
    assert "not found  new: no image titled 'New'" in run.out
    assert "Recorded 0 of 1 items; 3 already recorded" in run.out, run


def test_registrations_with_one_title_are_not_guessed(ws: Workspace) -> None:
    ws.manifest([{"name": f"r{n}", "type": "register", "title": "Same",
                  "file_url": ws.seed_object(f"x/{n}.mp4", mp4(900 + n))} for n in (1, 2)])
    ids = applied(ws, ws.state)
    ws.state.unlink()
    run = imp(ws, "--discover")
    assert run.code == 0, run
    assert "Recorded 0 of 2 items" in run.out, run
    assert run.out.count(f"2 videos are titled 'Same' ({', '.join(sorted(ids.values()))})") == 2, run
    assert "`vodsync import r1 MEDIA_ID` the right one" in run.out
