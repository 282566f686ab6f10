"""The shared vocabulary (`vodsync.vocab`): records hold a `Kind` and an `Origin`, not strings,
the producer of an item sets its origin, and state files written before keep loading."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from vodsync.desired.items import DesiredItem
from vodsync.errors import StateError
from vodsync.state.store import Record, RecordStatus, StateStore
from vodsync.vocab import Kind, Origin


def test_origin_values() -> None:
    assert Origin.manifest() == "manifest" and not Origin.manifest().is_drop
    assert Origin.manifest().label is None
    drop = Origin.drop("inbox")
    assert drop == "drop:inbox" and drop.is_drop and drop.label == "inbox"
    assert Origin("drop:inbox") == drop
    for bad in ("", "drop:", "elsewhere"):
        with pytest.raises(ValueError):
            Origin(bad)


def test_a_record_holds_a_kind_and_an_origin_even_when_given_text() -> None:
    rec = Record("n", "video", RecordStatus.READY, "/p", origin="drop:in")  # type: ignore[arg-type]
    assert rec.kind is Kind.VIDEO and type(rec.origin) is Origin and rec.origin.label == "in"
    assert type(Record("m", Kind.URL, RecordStatus.READY, "u").origin) is Origin


def test_records_read_back_typed_from_a_file_written_as_text(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateStore.open(path) as store:
        store.put(Record("a", Kind.IMAGE, RecordStatus.READY, "/a.png", origin=Origin.drop("box")))
        store.put(Record("b", Kind.URL, RecordStatus.READY, "https://e/b.mp4"))
    with sqlite3.connect(path) as conn:  # what the file holds: the same text as before
        assert sorted(conn.execute("SELECT name, kind, origin FROM records")) == [
            ("a", "image", "drop:box"), ("b", "url", "manifest")]
    with StateStore.open(path, readonly=True) as store:
        records = store.records()
    assert records["a"].kind is Kind.IMAGE and records["a"].origin == Origin.drop("box")
    assert type(records["a"].origin) is Origin and records["b"].kind is Kind.URL


def test_an_unknown_kind_or_origin_in_the_file_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateStore.open(path) as store:
        store.put(Record("a", Kind.IMAGE, RecordStatus.READY, "/a.png"))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE records SET kind = 'hologram'")
    with StateStore.open(path, readonly=True) as store, pytest.raises(StateError, match="unknown kind 'hologram'"):
        store.records()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE records SET kind = 'image', origin = 'somewhere'")
    with StateStore.open(path, readonly=True) as store, pytest.raises(StateError, match="origin 'somewhere'"):
        store.records()


def test_the_origin_is_the_producers_not_parsed_from_the_name() -> None:
    # A name that merely looks like a drop folder's does not make the item a drop folder's.
    named = DesiredItem(name="drop/in/abc", kind=Kind.URL, source="https://e/x.mp4")
    assert named.made_by == Origin.manifest()
    dropped = DesiredItem(name="clip", kind=Kind.URL, source="https://e/x.mp4", made_by=Origin.drop("in"))
    assert dropped.made_by == "drop:in"
