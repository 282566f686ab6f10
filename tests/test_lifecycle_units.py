"""The pure parts of the lifecycle (issue 15): moved entries, targets, plan digests, the plan file, Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vodsync.desired.items import DesiredItem, Kind, Move
from vodsync.desired.loader import load_manifest_set
from vodsync.engine.diff import Action, Change
from vodsync.engine.moves import plan_moves, reference_conflicts
from vodsync.engine.ownership import Namespace
from vodsync.engine.plan import PlanOptions, make_plan
from vodsync.engine.saved_plan import SavedPlanError, manifests_digest, read_plan, state_digest
from vodsync.engine.targets import Targets
from vodsync.errors import ManifestError
from vodsync.state.records import Record, RecordStatus
from vodsync.ui import render_markdown

NS = Namespace("team-a")


def rec(name: str, **kw: object) -> Record:
    return Record(name=name, kind="video", status=RecordStatus.READY, source="/m/x.mp4", remote_id=f"id-{name}",
                  reference_id=NS.reference_id(name), **kw)  # type: ignore[arg-type]


def test_moved_entries_are_checked_with_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "media:\n  - {name: b, type: url, url: 'https://x/y.mp4'}\n"
        "moved:\n  - {from: b, to: c}\n  - {from: d, to: d}\n  - {from: Bad Name, to: e, via: f}\n")
    with pytest.raises(ManifestError) as err:
        load_manifest_set(tmp_path)
    text = str(err.value)
    assert "a.yaml:4: moved: 'b' is moved to 'c' but is still an item of the manifests" in text
    assert "a.yaml:5: moved: moves 'd' to itself" in text
    assert "a.yaml:6: moved[2].from:" in text
    assert "a.yaml:6: moved[2].via: unknown field; a moved entry has only from and to" in text


def test_plan_moves_follows_chains_skips_done_moves_and_refuses_a_taken_name() -> None:
    records = {"a": rec("a"), "x": rec("x"), "y": rec("y")}
    moved = plan_moves([Move("a", "b"), Move("b", "c"), Move("gone", "z"), Move("x", "y")], records)
    assert sorted(moved.records) == ["c", "x", "y"]
    assert moved.records["c"].remote_id == "id-a" and moved.records["c"].name == "c"
    assert [(c.action, c.name, c.reason) for c in moved.changes] == [
        (Action.MOVE, "b", "moved a → b"), (Action.MOVE, "c", "moved b → c")]
    assert moved.refusal is not None and "moved x → y: both names are recorded" in moved.refusal


def test_a_new_video_may_not_take_the_reference_id_a_moved_video_keeps() -> None:
    moved = {"intro-v2": rec("intro").replace(name="intro-v2")}
    create = Change(Action.CREATE, "intro", Kind.VIDEO, "new item")
    names, refusal = reference_conflicts([create], moved, NS)
    assert names == {"intro"} and refusal and "held by intro-v2" in refusal
    assert reference_conflicts([Change(Action.CREATE, "other", Kind.VIDEO, "new item")], moved, NS) == (set(), None)
    # Another state's namespace derives another ReferenceId for the same name: no clash there.
    assert reference_conflicts([create], moved, Namespace("team-b")) == (set(), None)


def test_targets_select_by_glob_and_say_what_they_cover() -> None:
    assert Targets.of(None, []) is None
    t = Targets.of(["s1/*"], ["s1/old*"])
    assert t is not None
    assert [n for n in ("s1/a", "s1/old-a", "s2/a") if t.selects(n)] == ["s1/a"]
    assert t.describe() == "only items matching s1/*, except s1/old*"
    assert Targets.of(None, ["x"]).describe() == "all items except x"  # type: ignore[union-attr]


def test_digests_move_with_what_a_plan_depends_on_and_not_with_write_times() -> None:
    item = DesiredItem("a", Kind.URL, "https://x/a.mp4", {"title": "A"})
    assert manifests_digest([item], []) == manifests_digest([item], [])
    assert manifests_digest([item], []) != manifests_digest([item], [Move("b", "a")])
    changed = DesiredItem("a", Kind.URL, "https://x/a.mp4", {"title": "B"})
    assert manifests_digest([item], []) != manifests_digest([changed], [])
    r = rec("a")
    assert state_digest({"a": r}) == state_digest({"a": r.replace(updated_at=99.0)})
    assert state_digest({"a": r}) != state_digest({"a": r.replace(remote_status="Transcoding")})


def test_a_plan_file_of_another_format_or_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    for doc, words in (({"format": "terraform"}, "is not a vodsync plan file"),
                       ({"format": "vodsync-plan", "format_version": 99}, "format version 99")):
        path.write_text(json.dumps(doc))
        with pytest.raises(SavedPlanError, match=words):
            read_plan(path)
    path.write_text("{")
    with pytest.raises(SavedPlanError, match="not JSON"):
        read_plan(path)


def test_markdown_fences_outlast_backticks_in_values() -> None:
    change = Change(Action.UPDATE, "a", Kind.VIDEO, "title changed: ```x``` → ````y````", ("title",))
    body = render_markdown(make_plan([change], PlanOptions(), desired_count=1))
    assert "`````diff" in body and body.count("`````") == 2
