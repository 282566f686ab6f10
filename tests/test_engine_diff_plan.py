"""diff and plan as pure functions: desired items x records -> changes -> plan."""

from __future__ import annotations

import pytest

from vodsync.desired.items import DesiredItem, Kind, LocalFile
from vodsync.engine.diff import Action, diff, needs_hash
from vodsync.engine.plan import PlanOptions, make_plan, plan_json
from vodsync.state.store import Record, RecordStatus
from vodsync.ui import render_text


def video(name: str = "intro", *, size: int = 10, mtime: int = 1, path: str | None = None, **meta) -> DesiredItem:
    path = path or f"/m/{name}.mp4"
    return DesiredItem(
        name=name, kind=Kind.VIDEO, source=path, metadata={"title": name.title(), **meta},
        local=LocalFile(path, size, mtime),
    )


def image(name: str = "logo", **meta) -> DesiredItem:
    path = f"/m/{name}.png"
    return DesiredItem(name=name, kind=Kind.IMAGE, source=path, metadata={"title": name, **meta},
                       local=LocalFile(path, 5, 1), options={"image_type": "default"})


def url(name: str = "trailer", src: str = "https://cdn.example.com/t.mp4") -> DesiredItem:
    return DesiredItem(name=name, kind=Kind.URL, source=src, metadata={"title": name})


def recorded(item: DesiredItem, status: RecordStatus = RecordStatus.READY, **kw) -> Record:
    base = dict(
        name=item.name, kind=str(item.kind), status=status, source=item.source, remote_id=f"id-{item.name}",
        metadata=dict(item.metadata), content_hash="h0" if item.local else None,
        size=item.local.size if item.local else None, mtime_ns=item.local.mtime_ns if item.local else None,
    )
    base.update(kw)
    return Record(**base)


def strs(changes) -> list[str]:
    return [str(c) for c in changes]


def test_new_items_are_created_and_sized():
    items = [video("a", size=100), image("b"), url("c")]
    changes = diff(items, {})
    assert strs(changes) == ["create(a: video)", "create(b: image)", "create(c: url)"]
    assert [c.upload_bytes for c in changes] == [100, 5, 0]


def test_in_sync_items_yield_nothing_and_need_no_hash():
    items = [video("a", tags=("x", "y")), image("b"), url("c")]
    records = {i.name: recorded(i) for i in items}
    assert diff(items, records) == []
    assert not any(needs_hash(i, records[i.name]) for i in items)


def test_tag_order_and_empty_values_are_not_changes():
    item = video("a", tags=("y", "x"), description="")
    rec = recorded(video("a", tags=("x", "y")))
    assert diff([item], {"a": rec}) == []


def test_title_change_is_one_update_with_only_that_field():
    rec = recorded(video("a", description="d"))
    changes = diff([video("a", description="d", title="New")], {"a": rec})
    assert strs(changes) == ["update(a: title)"]
    assert changes[0].fields == ("title",)


def test_field_absent_from_manifest_is_not_managed():
    rec = recorded(video("a", description="set in the console"))
    assert diff([video("a")], {"a": rec}) == []


def test_stat_change_with_same_hash_is_bookkeeping_only():
    item = video("a", mtime=2)
    rec = recorded(video("a", mtime=1))
    assert needs_hash(item, rec)
    changes = diff([item], {"a": rec}, hashes={"a": "h0"})
    assert [c.action for c in changes] == [Action.TOUCH]
    plan = make_plan(changes, PlanOptions(), desired_count=1)
    assert not plan.has_changes and plan.in_sync == 1


def test_new_bytes_are_a_replace_with_upload_size():
    item = video("a", size=20, mtime=2)
    changes = diff([item], {"a": recorded(video("a"))}, hashes={"a": "h1"})
    assert strs(changes) == ["replace(a: video)"]
    assert changes[0].reason == "content changed" and changes[0].upload_bytes == 20
    assert changes[0].content_hash == "h1"


def test_url_change_is_a_replace():
    rec = recorded(url("c"))
    changes = diff([url("c", "https://cdn.example.com/other.mp4")], {"c": rec})
    assert strs(changes) == ["replace(c: url)"]


def test_kind_change_is_a_replace():
    rec = recorded(image("a"))
    changes = diff([video("a")], {"a": rec})
    assert changes[0].action is Action.REPLACE and "type changed" in changes[0].reason


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (RecordStatus.CREATING, Action.RESUME),
        (RecordStatus.UPLOADING, Action.RESUME),
        (RecordStatus.DELETING, Action.RESUME),
        (RecordStatus.INGESTING, Action.FOLLOW),
        (RecordStatus.PROCESSING, None),
    ],
)
def test_unfinished_work_is_resumed_or_followed(status, action):
    item = video("a")
    changes = diff([item], {"a": recorded(item, status)})
    assert [c.action for c in changes] == ([action] if action else [])


def test_failed_without_media_is_resumed_with_the_error():
    item = video("a")
    rec = recorded(item, RecordStatus.FAILED, remote_id=None, last_error="Throttling.User: slow down")
    (change,) = diff([item], {"a": rec})
    assert change.action is Action.RESUME and "Throttling.User" in change.reason


def test_removed_items_are_deletes_but_never_drop_folder_items():
    gone = recorded(video("gone"))
    dropped = recorded(video("drop/in/abc"), origin="drop:in")
    changes = diff([], {"gone": gone, "drop/in/abc": dropped})
    assert strs(changes) == ["delete(gone: video)"]


def test_refresh_drift_updates_and_recreates():
    a, b = video("a"), video("b")
    records = {"a": recorded(a), "b": recorded(b)}
    remote = {"a": {"title": "Changed in console"}, "b": None}
    changes = {c.name: c for c in diff([a, b], records, remote=remote)}
    assert changes["a"].action is Action.UPDATE and changes["a"].fields == ("title",)
    assert "changed remotely" in changes["a"].reason
    assert changes["b"].action is Action.CREATE and changes["b"].reason == "deleted remotely"


# ------------------------------------------------------------------- plan policy


def _deletes(n: int) -> tuple[list, dict]:
    records = {f"v{i}": recorded(video(f"v{i}")) for i in range(n)}
    return diff([video("keep")], {**records, "keep": recorded(video("keep"))}), records


def test_deletes_need_prune():
    changes, _ = _deletes(2)
    plan = make_plan(changes, PlanOptions(prune=False), desired_count=1)
    assert not plan.has_changes and len(plan.kept) == 2
    assert "--prune" in plan.kept[0].reason
    plan = make_plan(changes, PlanOptions(prune=True), desired_count=1)
    assert strs(plan) == ["delete(v0: video)", "delete(v1: video)"]


def test_protected_records_are_never_deleted():
    rec = recorded(video("p"), protect=True)
    plan = make_plan(diff([video("x")], {"p": rec}), PlanOptions(prune=True), desired_count=1)
    assert strs(plan) == ["create(x: video)"] and [c.name for c in plan.kept] == ["p"]


def test_max_delete_refuses_the_whole_run():
    changes, _ = _deletes(3)
    plan = make_plan(changes, PlanOptions(prune=True, max_delete=2), desired_count=1)
    assert plan.refusal and "--max-delete 2" in plan.refusal
    assert not any(c.action is Action.DELETE for c in plan.actions)


def test_empty_desired_set_never_prunes():
    records = {"a": recorded(video("a"))}
    plan = make_plan(diff([], records), PlanOptions(prune=True, max_delete=None), desired_count=0)
    assert plan.refusal and "no media" in plan.refusal


def test_plan_order_text_and_json():
    records = {"old": recorded(image("old")), "t": recorded(video("t"))}
    items = [video("new", size=2048), video("t", title="T2")]
    plan = make_plan(diff(items, records), PlanOptions(prune=True), desired_count=2)
    assert strs(plan) == ["create(new: video)", "update(t: title)", "delete(old: image)"]
    text = render_text(plan)
    assert "Plan: 1 to create, 1 to update, 0 to replace, 1 to delete; 2.0 KiB to upload." in text
    data = plan_json(plan)
    assert data["summary"]["create"] == 1 and data["summary"]["upload_bytes"] == 2048
    assert data["changes"][1] == {"action": "update", "name": "t", "kind": "video", "reason": "title changed",
                                  "fields": ["title"], "remote_id": "id-t",
                                  "before": {"title": "T"}, "after": {"title": "T2"}}
    assert data["format_version"] == 1
    assert data["changes"][0]["before"] is None and data["changes"][0]["after"] == {"file": "/m/new.mp4", "title": "New"}
    assert '      title: "T" → "T2"' in text.splitlines()


def test_no_changes_summary():
    item = video("a")
    plan = make_plan(diff([item], {"a": recorded(item)}), PlanOptions(), desired_count=1)
    assert render_text(plan) == "No changes. 1 item(s) in sync."


def test_items_still_processing_at_vod_are_said_in_a_plan_without_changes(tmp_path):
    from vodsync.engine.reconcile import build_plan
    from vodsync.state.store import StateStore

    a, b = video("a"), video("b")
    with StateStore.open(tmp_path / "state.db") as store:
        store.put_many([recorded(a, RecordStatus.PROCESSING), recorded(b)])
        plan = build_plan([a, b], store, PlanOptions())
    assert not plan.has_changes and plan.processing == 1
    assert render_text(plan) == "No changes. 2 item(s) in sync; 1 still processing at VOD (apply follows it)."
    assert plan_json(plan)["summary"]["processing"] == 1
