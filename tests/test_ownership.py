"""Ownership (engine/ownership.py): one state's media told from everyone else's, the way the
service allows (no ReferenceId or UserData in SearchMedia), and a namespace per state so two
states with the same item names on one account never touch each other's media.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from safetykit import Library, SourceServer, mp4, png, vtt

from vodsync.cloud.settings import CloudSettings
from vodsync.cloud.vod import VodClient
from vodsync.config import load_config
from vodsync.emulator import Emulator
from vodsync.engine.executor import Executor, reference_id, user_data
from vodsync.engine.ownership import LEGACY, NAMESPACE_KEY, Namespace, marker_of, state_namespace
from vodsync.errors import ConfigError
from vodsync.state.store import Record, RecordStatus, StateStore


def _client(emulator: Emulator) -> VodClient:
    return VodClient(CloudSettings("emulator", "emulator-secret", endpoint=emulator.url))


def _executor(store: StateStore, emulator: Emulator, tmp_path: Path) -> Executor:
    return Executor(store, _client(emulator), checkpoint_dir=tmp_path / "cp")


# ------------------------------------------------------------------ namespaces (pure-ish)


def test_a_new_state_gets_a_random_namespace_recorded_once(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "a.db") as a, StateStore.open(tmp_path / "b.db") as b:
        ns_a, ns_b = state_namespace(a), state_namespace(b)
        assert ns_a != ns_b and not ns_a.legacy
        assert a.get_meta(NAMESPACE_KEY) == ns_a.value
        assert state_namespace(a) == ns_a  # stable
        assert ns_a.reference_id("intro") != ns_b.reference_id("intro")
        assert ns_a.reference_id("intro") != reference_id("intro")
        assert 6 <= len(ns_a.reference_id("intro")) <= 64
        assert marker_of(ns_a.user_data("intro")) == marker_of(json.dumps(
            {"Extend": {"vodsync": "intro", "ns": ns_a.value}}))
        assert ns_a.owns(ns_a.user_data("intro"), "intro")
        assert not ns_b.owns(ns_a.user_data("intro"))
        assert not ns_a.owns(ns_a.user_data("intro"), "outro")


def test_an_existing_state_keeps_the_name_only_scheme(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "old.db") as store:
        store.put(Record(name="intro", kind="video", status=RecordStatus.READY, source="/x", remote_id="v1"))
        ns = state_namespace(store)
        assert ns == Namespace(LEGACY) and store.get_meta(NAMESPACE_KEY) == LEGACY
        assert ns.reference_id("intro") == reference_id("intro")
        assert ns.user_data("intro") == user_data("intro")
        assert ns.owns(user_data("intro"), "intro")
        assert not ns.owns(Namespace("team-a").user_data("intro"))


def test_a_pinned_namespace_is_recorded_and_a_different_pin_is_refused(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "s.db") as store:
        assert state_namespace(store, "team-a") == Namespace("team-a")
        assert state_namespace(store) == Namespace("team-a")
        with pytest.raises(ConfigError, match="belongs to namespace 'team-a'.*pins namespace 'team-b'"):
            state_namespace(store, "team-b")


def test_config_namespace_key_is_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "vodsync.yaml"
    cfg.write_text("region: cn-shanghai\nnamespace: team-a\n")
    assert load_config(cfg).namespace == "team-a"
    cfg.write_text("region: cn-shanghai\nnamespace: Team A\n")
    with pytest.raises(ConfigError, match=r"vodsync.yaml:2: namespace: must be 3-32 of a-z"):
        load_config(cfg)


# ------------------------------------------------------------------ recovery, the service's way


def test_recovery_finds_image_and_attached_orphans_by_title_and_marker(tmp_path: Path, emulator: Emulator) -> None:
    """SearchMedia shows no UserData: recovery searches by title and creation time, then reads the
    marker with GetImageInfo / GetAttachedMediaInfo. Only this state's orphan of this item goes."""
    c = _client(emulator)
    with StateStore.open(tmp_path / "s.db") as store:
        ex = _executor(store, emulator, tmp_path)
        ns = ex.namespace
        now = time.time()
        for name, kind, title in (("poster", "image", "Poster"), ("subs", "attached", "Subs")):
            store.put(Record(name=name, kind=kind, status=RecordStatus.CREATING, source="/x",
                             intent={"op": "create", "at": now, "title": title}))

        def image(title: str, marker: str | dict | None) -> str:
            return c.create_upload_image(image_type="default", image_ext="png", title=title,
                                         user_data=marker).media_id

        def attached(title: str, marker: str | dict | None) -> str:
            return c.create_upload_attached_media(business_type="subtitle", media_ext="vtt", title=title,
                                                  user_data=marker).media_id

        ours = {image("Poster", ns.user_data("poster")), attached("Subs", ns.user_data("subs"))}
        theirs = {
            image("Poster", Namespace("other-team").user_data("poster")),  # same item, another state
            image("Poster", None),  # no marker at all
            image("Poster", ns.user_data("poster-2")),  # our marker, another item
            image("Poster 2", ns.user_data("poster")),  # a title that only contains ours
            attached("Subs", user_data("subs")),  # the name-only scheme: another (old) state
            attached("Subs", {"Extend": {"team": "x"}}),
        }
        ex.recover()
    state = emulator.state()
    left = {i["ImageId"] for i in state["images"]} | {a["MediaId"] for a in state["attached"]}
    assert left == theirs, f"orphans kept: {ours & left}; look-alikes deleted: {theirs - left}"


def test_recovery_never_adopts_a_video_marked_by_another_namespace(tmp_path: Path, emulator: Emulator) -> None:
    c = _client(emulator)
    with StateStore.open(tmp_path / "s.db") as store:
        ex = Executor(store, _client(emulator), checkpoint_dir=tmp_path / "cp", namespace=Namespace("team-b"))
        ref = ex.namespace.reference_id("intro")
        theirs = c.create_upload_video(title="Intro", file_name="i.mp4", reference_id=ref,
                                       user_data=Namespace("team-a").user_data("intro")).media_id
        store.put(Record(name="intro", kind="video", status=RecordStatus.CREATING, source="/x",
                         reference_id=ref, intent={"op": "create", "at": time.time(), "title": "Intro"}))
        ex.recover()
        rec = store.get("intro")
        assert rec is not None and rec.remote_id is None and rec.status is RecordStatus.CREATING
    assert theirs in {v["VideoId"] for v in emulator.state()["videos"]}


# ------------------------------------------------------------------ two states, one account


@pytest.fixture
def sources():
    server = SourceServer()
    yield server
    server.close()


def _team(root: Path, emulator: Emulator, sources: SourceServer, fill: bytes) -> Library:
    lib = Library(root, emulator, sources)
    lib.write([
        {"name": "intro", "type": "video", "title": "Intro", "file": lib.file("intro.mp4", mp4(3000, fill))},
        {"name": "logo", "type": "image", "title": "Logo", "file": lib.file("logo.png", png(fill[0]))},
        {"name": "subs", "type": "attached", "title": "Subs", "business_type": "subtitle",
         "file": lib.file("subs.vtt", vtt(fill[0]))},
    ])
    return lib


def test_two_states_with_the_same_names_on_one_account(tmp_path: Path, emulator: Emulator,
                                                       sources: SourceServer) -> None:
    """Team A and team B each have items intro/logo/subs. Each gets its own media; B's plan and
    prune touch only B's. (Before namespaces, B adopted A's video by its ReferenceId and B's
    `--prune` deleted it while A's plan said "in sync".)"""
    a = _team(tmp_path / "a", emulator, sources, b"A")
    b = _team(tmp_path / "b", emulator, sources, b"B")
    first = a.cli("apply")
    assert first.code == 0, first
    b_first = b.cli("apply")
    b.cli("apply")  # what an operator does after a failed item (a no-op when all went well)
    state = emulator.state()
    videos = {v["VideoId"] for v in state["videos"]}
    assert len(videos) == 2 and len(state["images"]) == 2 and len(state["attached"]) == 2, state
    ra, rb = a.records(), b.records()
    for name in ("intro", "logo", "subs"):
        assert ra[name].remote_id != rb[name].remote_id, name
    assert ra["intro"].reference_id != rb["intro"].reference_id

    b.write([i for i in b.items if i["name"] != "intro"])
    pruned = b.cli("apply", "--prune")
    assert pruned.code == 0, pruned
    assert {v["VideoId"] for v in emulator.state()["videos"]} == {ra["intro"].remote_id}
    for lib in (a, b):
        plan = lib.cli("plan", "--detailed-exitcode", "--refresh")
        assert plan.code == 0, plan
    assert b.cli("gc").out.startswith("Nothing to collect"), "B's gc sees nothing of A's"
    assert b_first.code == 0, b_first


def test_gc_collects_only_its_own_namespace(tmp_path: Path, emulator: Emulator) -> None:
    """Two states' dead uploads of an item with the same name and title: each gc lists only its own."""
    from vodsync.engine import gc

    c = _client(emulator)
    team_a, team_b = Namespace("team-a"), Namespace("team-b")
    mine = {ns: {
        c.create_upload_image(image_type="default", image_ext="png", title="Logo",
                              user_data=ns.user_data("logo")).media_id,
        c.create_upload_video(title="Intro", file_name="i.mp4", reference_id=ns.reference_id("intro"),
                              user_data=ns.user_data("intro")).media_id,
    } for ns in (team_a, team_b)}
    emulator.advance(gc.CREDENTIAL_LIFETIME + 1)
    for ns in (team_a, team_b):
        found = gc.find_leftovers({}, c, namespace=ns, checkpoints=tmp_path / "none", now=emulator.clock.now())
        assert {m.media_id for m in found.media} == mine[ns]
