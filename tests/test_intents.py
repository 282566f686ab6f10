"""Typed intents and the record's named transitions (`vodsync.state.records`).

Intents are read in every form vodsync has stored (no migration of existing state files):
the superseded media's kind was written as `supersedes_kind`, and by cleanups as `kind`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from vodsync.state.records import Intent, MediaRef, Op, Record, RecordStatus
from vodsync.state.store import StateStore
from vodsync.vocab import Kind

# What earlier versions wrote into the intent column, verbatim.
STORED = {
    "create": '{"at":1700000000.5,"op":"create","title":"Logo","supersedes":null}',
    "ingest": '{"at":5.0,"metadata":{"tags":["a"],"title":"T"},"op":"ingest","options":{},'
              '"previous_metadata":{"title":"Old"},"previous_source":"https://e/old.mp4",'
              '"supersedes":"v-old","supersedes_kind":"url","title":"T","url":"https://e/new.mp4"}',
    "cleanup": '{"kind":"image","op":"cleanup","supersedes":"img-1"}',
    "upload": '{"at":7.0,"op":"upload","supersedes":"att-1"}',
}


def _stored(tmp_path: Path) -> dict[str, Record]:
    path = tmp_path / "s.db"
    with StateStore.open(path) as store:
        for name in STORED:
            store.put(Record(name, Kind.IMAGE, RecordStatus.CREATING, "/x.png"))
    with sqlite3.connect(path) as conn:
        for name, text in STORED.items():
            conn.execute("UPDATE records SET intent = ? WHERE name = ?", (text, name))
    with StateStore.open(path, readonly=True) as store:
        return store.records()


def test_intents_stored_by_earlier_versions_read_typed(tmp_path: Path) -> None:
    records = _stored(tmp_path)
    create = records["create"].intent
    assert create == Intent(Op.CREATE, at=1700000000.5, title="Logo")
    ingest = records["ingest"].intent
    assert ingest is not None and ingest.op is Op.INGEST
    assert ingest.supersedes == MediaRef("v-old", Kind.URL) and ingest.url == "https://e/new.mp4"
    assert ingest.metadata == {"tags": ("a",), "title": "T"} and ingest.previous_source == "https://e/old.mp4"
    # The drifted key: a cleanup wrote the superseded media's kind as "kind".
    cleanup = records["cleanup"].intent
    assert cleanup == Intent(Op.CLEANUP, supersedes=MediaRef("img-1", Kind.IMAGE))
    upload = records["upload"].intent
    assert upload is not None and upload.supersedes == MediaRef("att-1", None)


def test_an_intent_writes_one_spelling_and_reads_back_equal(tmp_path: Path) -> None:
    intent = Intent(Op.CLEANUP, supersedes=MediaRef("img-1", Kind.IMAGE))
    assert intent.to_json() == {"op": "cleanup", "supersedes": "img-1", "supersedes_kind": "image"}
    path = tmp_path / "s.db"
    with StateStore.open(path) as store:
        store.put(Record("a", Kind.IMAGE, RecordStatus.READY, "/a.png", intent=intent))
        assert store.get("a").intent == intent  # type: ignore[union-attr]
    # Keys and operations this version does not know are kept, not dropped.
    odd = Intent.from_json({"op": "future", "at": 1.0, "gen": 3})
    assert odd.op == "future" and odd.to_json() == {"op": "future", "at": 1.0, "gen": 3}


def test_failed_is_the_only_transition_that_counts_an_attempt() -> None:
    rec = Record("n", Kind.VIDEO, RecordStatus.CREATING, "/v.mp4", attempts=2, next_attempt_at=9.0)
    failed = rec.failed("Throttling: slow down", status=None)
    assert failed.attempts == 3 and failed.status is RecordStatus.CREATING
    assert failed.last_error == "Throttling: slow down" and failed.last_result == "failed: Throttling: slow down"
    assert rec.failed("x").status is RecordStatus.FAILED
    assert rec.failed("y" * 900).last_error == "y" * 500
    intent = Intent(Op.CREATE, at=1.0)
    others = [
        rec.intending(intent), rec.created("v-1", intent), rec.ingesting("job-1", intent), rec.ready("Normal"),
        rec.lost(last_error="deleted remotely"),
    ]
    assert all(r.attempts == 2 for r in others)
    # Success starts the count again.
    for done in (rec.uploaded(RecordStatus.PROCESSING), rec.delivered("v-2")):
        assert done.attempts == 0 and done.last_error is None and done.next_attempt_at is None
    assert rec.delivered("v-2").status is RecordStatus.PROCESSING and rec.created("v-1").status is RecordStatus.UPLOADING
