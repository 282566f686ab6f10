"""Unit tests of the executor's per-kind workers with a small fake `VodClient` (no HTTP).

Each worker is given one `RunContext` and yields the outcomes of its work; the state file is
real (a temporary SQLite file). The end-to-end behaviour is tested on the emulator elsewhere.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from vodsync.cloud.types import Registered, RemoteMedia
from vodsync.desired.items import DesiredItem, Kind
from vodsync.engine.context import RunContext
from vodsync.engine.diff import Action, Change
from vodsync.engine.edits import Edits
from vodsync.engine.execution import ExecOptions, NullReporter
from vodsync.engine.ingests import Ingests
from vodsync.engine.ownership import Namespace
from vodsync.engine.recovery import Recovery
from vodsync.state.records import Intent, MediaRef, Op
from vodsync.state.store import Record, RecordStatus, StateStore


class FakeVod:
    """The few VodClient calls the tested workers make, answered from memory; `calls` logs them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.videos: dict[str, RemoteMedia] = {}
        self.registered: dict[str, Registered] = {}

    def register_media(self, entries: Sequence[Any], **_: Any) -> tuple[list[Registered], list[str]]:
        self.calls.append(("register_media", [e.file_url for e in entries]))
        found = [self.registered[e.file_url] for e in entries if e.file_url in self.registered]
        return found, [e.file_url for e in entries if e.file_url not in self.registered]

    def update_video_info(self, video_id: str, fields: Any) -> None:
        self.calls.append(("update_video_info", (video_id, dict(fields))))

    def update_image_infos(self, updates: Sequence[tuple[str, Any]]) -> list[str]:
        self.calls.append(("update_image_infos", [i for i, _ in updates]))
        return [i for i, _ in updates if i not in self.videos]

    def delete_videos(self, ids: Sequence[str]) -> None:
        self.calls.append(("delete_videos", list(ids)))

    def get_video_infos(self, ids: Sequence[str]) -> tuple[dict[str, RemoteMedia], list[str]]:
        return {i: self.videos[i] for i in ids if i in self.videos}, [i for i in ids if i not in self.videos]

    def get_videos_by_reference_ids(self, refs: Sequence[str]) -> tuple[dict[str, RemoteMedia], list[str]]:
        found = {m.reference_id: m for m in self.videos.values() if m.reference_id in refs}
        return found, [r for r in refs if r not in found]


@pytest.fixture
def store(tmp_path: Path):
    with StateStore.open(tmp_path / "state.db") as s:
        yield s


def context(store: StateStore, client: FakeVod, tmp_path: Path, now: float = 1000.0) -> RunContext:
    def no_upload(*_: Any, **__: Any) -> Any:
        raise AssertionError("these workers upload nothing")

    return RunContext(
        store=store, client=client, namespace=Namespace("ns-test"), options=ExecOptions(wait=0.0),  # type: ignore[arg-type]
        reporter=NullReporter(), uploader=no_upload, checkpoint_dir=tmp_path / "cp",
        stopping=threading.Event(), clock=lambda: now, sleep=lambda _: None,
    )


def register_item(name: str, url: str, title: str = "T") -> DesiredItem:
    return DesiredItem(name=name, kind=Kind.REGISTER, source=url, metadata={"title": title})


def test_register_records_each_outcome_and_deletes_what_a_replace_superseded(store, tmp_path) -> None:
    vod = FakeVod()
    vod.registered["oss://b/new.mp4"] = Registered("oss://b/new.mp4", "v-new", new_register=True)
    store.put(Record("a", Kind.REGISTER, RecordStatus.READY, "oss://b/old.mp4", remote_id="v-old",
                     options={"on_delete": "delete-source"}))
    replace = Change(Action.REPLACE, "a", Kind.REGISTER, "source changed", item=register_item("a", "oss://b/new.mp4"))
    create = Change(Action.CREATE, "b", Kind.REGISTER, "new", item=register_item("b", "oss://b/missing.mp4"))

    outcomes = list(Ingests(context(store, vod, tmp_path)).register([replace, create]))

    assert [(o.name, o.ok) for o in outcomes] == [("a", True), ("b", False)]
    a, b = store.get("a"), store.get("b")
    assert a is not None and a.status is RecordStatus.PROCESSING and a.remote_id == "v-new" and a.intent is None
    assert ("delete_videos", ["v-old"]) in vod.calls  # the superseded registration, after the new one
    assert b is not None and b.status is RecordStatus.FAILED and b.attempts == 1
    assert b.intent is not None and b.intent.op is Op.CREATE and b.intent.at == 1000.0


def test_update_of_media_deleted_remotely_fails_the_item_and_counts_once(store, tmp_path) -> None:
    vod = FakeVod()
    vod.videos["img-live"] = RemoteMedia("img-live", "image", "Normal", "x")
    for name in ("live", "gone"):
        store.put(Record(name, Kind.IMAGE, RecordStatus.READY, f"/{name}.png", remote_id=f"img-{name}",
                         metadata={"title": "old"}))
    item = DesiredItem(name="x", kind=Kind.IMAGE, source="/x.png", metadata={"title": "new"})
    batch = [Change(Action.UPDATE, n, Kind.IMAGE, "title", fields=("title",), item=item) for n in ("live", "gone")]

    outcomes = list(Edits(context(store, vod, tmp_path)).update(batch))

    assert [(o.name, o.ok) for o in outcomes] == [("live", True), ("gone", False)]
    live, gone = store.get("live"), store.get("gone")
    assert live is not None and live.metadata == {"title": "new"} and live.attempts == 0
    assert gone is not None and gone.status is RecordStatus.FAILED and gone.remote_id is None and gone.attempts == 1


def test_follow_settles_transcoding_and_reports_failures(store, tmp_path) -> None:
    vod = FakeVod()
    vod.videos["v1"] = RemoteMedia("v1", "video", "Normal", "one")
    vod.videos["v2"] = RemoteMedia("v2", "video", "TranscodeFail", "two")
    for name, vid in (("one", "v1"), ("two", "v2"), ("three", "v3")):
        store.put(Record(name, Kind.VIDEO, RecordStatus.PROCESSING, f"/{name}.mp4", remote_id=vid))

    outcomes = list(Ingests(context(store, vod, tmp_path)).follow({"one", "two", "three"}))

    assert [(o.name, o.ok) for o in outcomes] == [("two", False)]
    one, two, three = (store.get(n) for n in ("one", "two", "three"))
    assert one is not None and one.status is RecordStatus.READY
    assert two is not None and two.status is RecordStatus.FAILED and two.attempts == 1
    # Deleted remotely: lost, not a failed attempt; the next plan creates it again.
    assert three is not None and three.status is RecordStatus.FAILED and three.remote_id is None
    assert three.attempts == 0


def test_recovery_adopts_our_video_found_by_its_reference_id(store, tmp_path) -> None:
    vod = FakeVod()
    ctx = context(store, vod, tmp_path)
    ref = ctx.namespace.reference_id("clip")
    vod.videos["v9"] = RemoteMedia("v9", "video", "Uploading", "Clip", reference_id=ref,
                                   user_data=ctx.namespace.user_data("clip"))
    store.put(Record("clip", Kind.VIDEO, RecordStatus.CREATING, "/clip.mp4",
                     intent=Intent(Op.CREATE, at=999.0, title="Clip")))
    store.put(Record("other", Kind.VIDEO, RecordStatus.READY, "/o.mp4", remote_id="v-o",
                     intent=Intent(Op.CLEANUP, supersedes=MediaRef("v-old", Kind.VIDEO))))

    Recovery(ctx).recover()

    clip = store.get("clip")
    assert clip is not None and clip.status is RecordStatus.UPLOADING and clip.remote_id == "v9"
    assert clip.reference_id == ref
    other = store.get("other")
    assert other is not None and other.intent is None  # the cleanup was carried out first
    assert vod.calls[0] == ("delete_videos", ["v-old"])


def test_url_submission_records_the_job_and_the_session_it_was_submitted_with(store, tmp_path) -> None:
    sessions: list[str | None] = []

    class UrlVod(FakeVod):
        def url_upload_batches(self, entries: Sequence[Any], limit: int = 20) -> list[list[int]]:
            return [list(range(len(entries)))]

        def upload_media_by_url(self, entries: Sequence[Any], *, session_id: str | None = None) -> dict[str, str]:
            sessions.append(session_id)
            return {e.url: f"job-{i}" for i, e in enumerate(entries)}

    store.put(Record("a", Kind.URL, RecordStatus.READY, "https://e/old.mp4", remote_id="v-old",
                     metadata={"title": "Old"}))
    item = DesiredItem(name="a", kind=Kind.URL, source="https://e/new.mp4", metadata={"title": "New"})
    ingests = Ingests(context(store, UrlVod(), tmp_path))
    batches = ingests.url_batches([Change(Action.REPLACE, "a", Kind.URL, "url changed", item=item)])

    outcomes = list(ingests.submit_urls(batches[0]))

    assert [(o.name, o.ok, o.pending) for o in outcomes] == [("a", True, True)]
    rec = store.get("a")
    assert rec is not None and rec.status is RecordStatus.INGESTING and rec.job_id == "job-0"
    assert rec.intent is not None and rec.intent.op is Op.INGEST and rec.intent.session == sessions[0]
    assert rec.intent.supersedes == MediaRef("v-old", Kind.URL)  # deleted once the job delivers
    assert rec.intent.previous_source == "https://e/old.mp4" and rec.intent.previous_metadata == {"title": "Old"}
