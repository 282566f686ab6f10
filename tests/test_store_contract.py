"""The store contract: the same tests on both state backends, SQLite and PostgreSQL (a real
server, `tests/pgserver.py`), then what only a shared (PostgreSQL) state does: leases with
expiry and fencing tokens, one leader, the shared API budget, versioned migrations."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from test_state_store import FakeClock, full_record

from vodsync.errors import StateError
from vodsync.state.location import StateLocation
from vodsync.state.records import Record, RecordStatus


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> StateLocation:
    if request.param == "sqlite":
        return StateLocation(path=tmp_path / "state" / "vodsync.db")
    return StateLocation(url=request.getfixturevalue("pg_url"))


@pytest.fixture
def shared(pg_url: str) -> StateLocation:
    return StateLocation(url=pg_url)


def _rec(name: str, status: RecordStatus = RecordStatus.READY) -> Record:
    return Record(name=name, kind="video", status=status, source=f"/m/{name}.mp4")


def test_every_field_round_trips_and_updated_at_is_stamped(location: StateLocation) -> None:
    clock = FakeClock()
    rec = full_record()
    with location.open(clock=clock) as store:
        store.put(rec)
        got = store.get("intro")
    assert got == rec.replace(updated_at=clock.now)
    # and after a reopen, through records() as well as get()
    with location.open() as store:
        assert store.records() == {"intro": rec.replace(updated_at=clock.now)}
        again = store.get("intro")
    assert again is not None
    assert again.status is RecordStatus.PROCESSING
    assert again.metadata["tags"] == ("a", "b")
    assert again.options["nested"] == {"x": (1, 2)}
    assert isinstance(again.protect, bool) and isinstance(again.mtime_ns, int)


def test_defaults_round_trip(location: StateLocation) -> None:
    rec = Record(name="x", kind="url", status=RecordStatus.CREATING, source="https://e.com/a.mp4")
    with location.open(clock=FakeClock(5.0)) as store:
        store.put(rec)
        assert store.get("x") == rec.replace(updated_at=5.0)
        assert store.get("missing") is None


def test_put_is_an_upsert_and_delete_forgets(location: StateLocation) -> None:
    clock = FakeClock(10.0)
    with location.open(clock=clock) as store:
        store.put(Record("a", "video", RecordStatus.CREATING, "/a"))
        clock.now = 20.0
        store.put(Record("a", "video", RecordStatus.READY, "/a", remote_id="v1"))
        got = store.get("a")
        assert got is not None and got.status is RecordStatus.READY and got.remote_id == "v1"
        assert got.updated_at == 20.0
        assert list(store.records()) == ["a"]
        store.delete("a")
        store.delete("a")  # forgetting twice is fine
        assert store.records() == {}


def test_put_many_is_atomic(location: StateLocation) -> None:
    with location.open() as store:
        store.put(Record("keep", "video", RecordStatus.READY, "/k"))
        bad = Record("bad", "video", RecordStatus.READY, "/b", metadata={"title": object()})
        good = [Record(f"g{i}", "video", RecordStatus.READY, f"/g{i}") for i in range(5)]
        with pytest.raises(StateError, match="not JSON"):
            store.put_many([*good, bad])
        assert set(store.records()) == {"keep"}
        # a duplicate primary key inside the batch is not an error: the last one wins
        store.put_many([*good, good[0].replace(source="/second")])
        assert store.get("g0").source == "/second"  # type: ignore[union-attr]


def test_a_large_batch_upserts_as_a_small_one(location: StateLocation) -> None:
    # Batches of hundreds of records take another path on PostgreSQL (COPY, then one upsert).
    batch = [_rec(f"b{i:04d}") for i in range(1_200)]
    with location.open(clock=FakeClock(7.0)) as store:
        store.put(_rec("b0001", RecordStatus.FAILED))
        # a name twice in the batch: the last one wins; a record already there is replaced
        store.put_many([*batch, batch[5].replace(source="/second")])
        got = store.records()
        assert len(got) == 1_200 and got["b0005"].source == "/second"
        assert got["b0001"] == batch[1].replace(updated_at=7.0)
        # two batches in one transaction: the second writes its own rows, not the first's again
        with store.transaction():
            store.put_many(batch[:600])
            store.delete("b0002")
            store.put_many([r.replace(attempts=1) for r in batch[600:]])
        got = store.records()
        assert "b0002" not in got and len(got) == 1_199 and got["b1000"].attempts == 1
        with pytest.raises(StateError, match="not JSON"), store.transaction():
            store.put_many([*batch, batch[0].replace(name="z", metadata={"title": object()})])
        assert len(store.records()) == 1_199


def test_transaction_groups_writes_and_rolls_back(location: StateLocation) -> None:
    with location.open() as store:
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.put(Record("a", "video", RecordStatus.READY, "/a"))
                store.set_meta("ledger", "x")
                raise RuntimeError("boom")
        assert store.records() == {} and store.get_meta("ledger") is None

        with store.transaction():
            store.put(Record("a", "video", RecordStatus.READY, "/a"))
            store.delete("a")
            store.put(Record("b", "video", RecordStatus.READY, "/b"))
            store.remember_hash("/b", 1, 2, "d")
        assert set(store.records()) == {"b"} and store.cached_hash("/b", 1, 2) == "d"

        # an inner transaction that fails dooms the outer one, even if the caller swallows the error
        with pytest.raises(StateError, match="rolled back"):
            with store.transaction():
                store.put(Record("c", "video", RecordStatus.READY, "/c"))
                with pytest.raises(KeyError):
                    with store.transaction():
                        raise KeyError("inner")
        assert set(store.records()) == {"b"}

        # a record that cannot be serialised is refused before anything is written: no harm done
        with store.transaction():
            store.put(Record("c", "video", RecordStatus.READY, "/c"))
            with pytest.raises(StateError, match="not JSON"):
                store.put(Record("d", "video", RecordStatus.READY, "/d", options={"x": {1, 2}}))
        assert set(store.records()) == {"b", "c"}


def test_threads_can_put_concurrently(location: StateLocation) -> None:
    with location.open() as store:

        def work(t: int) -> None:
            for i in range(100):
                store.put(Record(f"t{t}-{i}", "image", RecordStatus.READY, f"/{t}/{i}", attempts=i))
                if i % 10 == 0:
                    store.records()

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(store.records()) == 800


def test_records_can_be_read_by_status_and_open_intent(location: StateLocation):
    store = location.open()

    def rec(name: str, status: RecordStatus, intent: dict | None = None) -> Record:
        return Record(name=name, kind="video", status=status, source=f"/m/{name}.mp4", intent=intent)

    store.put_many([
        rec("a", RecordStatus.READY),
        rec("b", RecordStatus.INGESTING),
        rec("c", RecordStatus.PROCESSING, {"op": "cleanup", "supersedes": "old"}),
        rec("d", RecordStatus.CREATING, {"op": "create", "at": 1.0}),
    ])
    assert set(store.records()) == {"a", "b", "c", "d"}
    assert set(store.records(statuses=[RecordStatus.INGESTING, RecordStatus.PROCESSING])) == {"b", "c"}
    assert set(store.records(with_intent=True)) == {"c", "d"}
    assert set(store.records(statuses=[RecordStatus.CREATING], with_intent=True)) == {"d"}
    assert store.records(statuses=[]) == {}
    assert store.records(statuses=[RecordStatus.PROCESSING])["c"] == store.get("c")
    store.close()


def _write_raw(location: StateLocation, sql: str) -> None:
    """A write behind the store's back (another program, or a hand edit)."""
    if location.path is not None:
        import sqlite3

        con = sqlite3.connect(location.path)
        with con:
            con.execute(sql)
        con.close()
        return
    import psycopg

    with psycopg.connect(location.url, autocommit=True) as conn:
        conn.execute(sql.replace(" records ", " vodsync.records "))  # type: ignore[arg-type]


def test_records_read_in_slices_and_an_unreadable_row_leaves_the_store_usable(location: StateLocation):
    # More rows than one read slice (5,000); then one the store cannot read, late in the result:
    # the read stops with an error naming it, and the same connection answers the next query.
    n = 12_000
    with location.open() as store:
        store.put_many([_rec(f"item-{i:05d}") for i in range(n)])
        got = store.records()
        assert len(got) == n and got["item-11999"].source == "/m/item-11999.mp4"
    _write_raw(location, "UPDATE records SET status = 'bogus' WHERE name = 'item-11000'")
    with location.open() as store:
        with pytest.raises(StateError, match="item-11000.*unknown status 'bogus'"):
            store.records()
        assert store.get("item-00001") == _rec("item-00001").replace(updated_at=store.get("item-00001").updated_at)
        assert store.status_counts() == {"ready": n - 1, "bogus": 1}
        store.put(_rec("item-11000"))
        assert len(store.records()) == n


def test_without_chunked_reads_records_are_read_the_older_way(shared: StateLocation, monkeypatch) -> None:
    # psycopg before 3.2 or libpq before 17 have no chunked mode: the whole result, then slices.
    import vodsync.state.postgres as pg

    monkeypatch.setattr(pg, "_chunked_mode", lambda: False)
    with shared.open() as store:
        store.put_many([_rec(f"item-{i:05d}") for i in range(12_000)])
        got = store.records()
    assert len(got) == 12_000 and got["item-11999"].source == "/m/item-11999.mp4"


def test_status_counts_and_retry_times_come_from_the_table(location: StateLocation):
    store = location.open()
    store.put_many([
        Record(name="a", kind="video", status=RecordStatus.READY, source="/m/a"),
        Record(name="b", kind="video", status=RecordStatus.READY, source="/m/b"),
        Record(name="c", kind="url", status=RecordStatus.FAILED, source="http://x/c.mp4", next_attempt_at=50.0),
        Record(name="d", kind="url", status=RecordStatus.INGESTING, source="http://x/d.mp4"),
    ])
    assert store.status_counts() == {"ready": 2, "failed": 1, "ingesting": 1}
    assert store.retry_times() == [50.0]
    store.close()

def test_hash_cache_and_meta(location: StateLocation) -> None:
    with location.open() as store:
        assert store.cached_hash("/a.mp4", 10, 100) is None
        store.remember_hash("/a.mp4", 10, 100, "h1")
        assert store.cached_hash("/a.mp4", 10, 100) == "h1"
        assert store.cached_hash("/a.mp4", 10, 101) is None  # touched
        store.remember_hash("/a.mp4", 11, 101, "h3")  # a new version replaces the old one
        assert store.cached_hash("/a.mp4", 10, 100) is None and store.cached_hash("/a.mp4", 11, 101) == "h3"
        assert store.get_meta("ledger") is None
        store.set_meta("ledger", '{"a": 1}')
        assert store.get_meta("ledger") == '{"a": 1}'
        with pytest.raises(StateError):
            store.set_meta("schema_version", "99")
    with location.open(readonly=True) as store:
        assert store.cached_hash("/a.mp4", 11, 101) == "h3" and store.get_meta("ledger") == '{"a": 1}'
        with pytest.raises(StateError, match="read-only"):
            store.put(_rec("x"))


def test_a_reader_of_a_state_not_made_yet_sees_it_empty_and_creates_nothing(location: StateLocation) -> None:
    with location.open(readonly=True) as store:
        assert store.records() == {} and store.get("x") is None
        assert str(location).split("?")[0] in store.location
    with location.open() as store:  # a reader created nothing: the first writer makes the schema
        assert store.records() == {}
        store.put(_rec("a"))
    with location.open(readonly=True) as store:
        assert set(store.records()) == {"a"}


def test_one_process_claims_everything_it_asks_for_and_leads(location: StateLocation) -> None:
    with location.open() as store:
        assert store.claim(["a", "b"]) == {"a", "b"}
        store.put(_rec("a"))
        store.release(["a", "b"])
        assert store.is_leader()
        with store.alone("gc") as alone:
            assert alone
    with location.open(readonly=True) as reader:
        assert not reader.is_leader()


# -- only a shared state: leases, fencing, the leader, the budget, migrations --------------------


def test_an_item_is_claimed_by_one_process_at_a_time(shared: StateLocation) -> None:
    with shared.open() as a, shared.open() as b:
        assert a.claim(["x", "y"]) == {"x", "y"}
        assert b.claim(["x", "y", "z"]) == {"z"}
        assert a.claim(["x"]) == set()  # already held here: not handed out twice in one process
        a.release(["x"])
        assert b.claim(["x", "y"]) == {"x"}


def test_claims_race_without_double_grants(shared: StateLocation) -> None:
    names = [f"n{i}" for i in range(200)]
    stores = [shared.open() for _ in range(4)]
    got: list[set[str]] = [set() for _ in stores]

    def grab(i: int) -> None:
        for start in range(0, len(names), 20):
            got[i] |= stores[i].claim(names[start:start + 40])

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert sum(len(g) for g in got) == len(names) and set().union(*got) == set(names)


def test_a_dead_holders_lease_expires_and_its_late_write_is_fenced_off(shared: StateLocation) -> None:
    from vodsync.errors import LeaseLost
    from vodsync.state.postgres import PostgresStore

    stale = PostgresStore.open(shared.url, local_dir=Path("/nonexistent"), lease_seconds=0.2)  # type: ignore[arg-type]
    successor = PostgresStore.open(shared.url, local_dir=Path("/nonexistent"), lease_seconds=30)  # type: ignore[arg-type]
    try:
        assert stale.claim(["item"]) == {"item"}
        stale._closing.set()  # it stops renewing, as a frozen or partitioned process would
        stale.put(_rec("item", RecordStatus.UPLOADING))  # while it holds the lease it may write
        assert successor.claim(["item"]) == set()  # still live
        time.sleep(0.3)  # the lease expires (real time: expiry is the server's clock)
        assert successor.claim(["item"]) == {"item"}
        assert successor.held()["item"] > stale.held()["item"]  # a newer fencing token
        successor.put(_rec("item", RecordStatus.READY))
        with pytest.raises(LeaseLost):
            stale.put(_rec("item", RecordStatus.FAILED))  # the stale holder cannot overwrite it
        successor.release(["item"])
        with pytest.raises(LeaseLost):
            stale.put(_rec("item", RecordStatus.FAILED))  # nor after the successor let go
        assert successor.get("item").status is RecordStatus.READY  # type: ignore[union-attr]
        with pytest.raises(LeaseLost):  # nor by a writer without a lease while another holds one
            successor.claim(["other"]) and stale.put(_rec("other"))
    finally:
        stale.close()
        successor.close()


def test_live_holders_renew_their_leases(shared: StateLocation) -> None:
    from vodsync.state.postgres import PostgresStore

    a = PostgresStore.open(shared.url, local_dir=Path("/nonexistent"), lease_seconds=0.6)  # type: ignore[arg-type]
    b = PostgresStore.open(shared.url, local_dir=Path("/nonexistent"))  # type: ignore[arg-type]
    try:
        assert a.claim(["kept"]) == {"kept"}
        deadline = time.monotonic() + 1.5  # two and a half lifetimes of the lease
        while time.monotonic() < deadline:
            assert b.claim(["kept"]) == set()
            time.sleep(0.1)
        a.put(_rec("kept"))
    finally:
        a.close()
        b.close()
    with shared.open() as c:  # a closed store released its leases
        assert c.claim(["kept"]) == {"kept"}


def test_one_leader_and_leadership_moves_when_it_goes(shared: StateLocation) -> None:
    a, b = shared.open(), shared.open()
    try:
        assert a.is_leader() and a.is_leader()
        assert not b.is_leader()
        a.close()
        assert b.is_leader()
    finally:
        a.close()
        b.close()


def test_the_budget_spaces_calls_across_processes(shared: StateLocation) -> None:
    a, b = shared.open(), shared.open()
    try:
        # 10/s with a burst of 2: two calls go at once, then each waits its turn, whoever asks.
        waits = [s.take("CreateUploadVideo", 10, 2) for s in (a, b, a, b, a, b)]  # type: ignore[attr-defined]
        assert waits[0] == 0 and waits[1] == 0
        assert all(later > earlier for earlier, later in zip(waits[2:], waits[3:], strict=False))
        assert waits[5] == pytest.approx(0.4, abs=0.05)
        assert a.take("DeleteVideo", 10, 2) == 0  # type: ignore[attr-defined]  # one bucket per operation
    finally:
        a.close()
        b.close()


def test_schema_is_versioned_and_a_newer_one_is_refused(shared: StateLocation) -> None:
    import psycopg

    from vodsync.state.postgres import SCHEMA_VERSION

    opened = []
    threads = [threading.Thread(target=lambda: opened.append(shared.open())) for _ in range(3)]
    for t in threads:  # three processes opening a new database at once: one migrates, all work
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 3
    for s in opened:
        assert s.get_meta("schema_version") == str(SCHEMA_VERSION)
        s.close()
    with psycopg.connect(shared.url, autocommit=True) as conn:
        conn.execute("UPDATE vodsync.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StateError, match="newer"):
        shared.open()
    with pytest.raises(StateError, match="newer"):
        shared.open(readonly=True)


def test_an_unreachable_database_is_a_clear_error_without_the_password() -> None:
    where = StateLocation.parse("postgresql://vodsync:s3cret@127.0.0.1:1/vodsync")
    with pytest.raises(StateError) as err:
        where.open()
    assert "s3cret" not in str(err.value) and "127.0.0.1" in str(err.value)
    assert "s3cret" not in str(where)


def test_a_role_runs_in_one_process_at_a_time(shared: StateLocation) -> None:
    with shared.open() as a, shared.open() as b:
        with a.alone("gc") as first:
            with b.alone("gc") as second, b.alone("other") as other:
                assert first and not second and other
        with b.alone("gc") as again:  # released when the first block ended
            assert again


@pytest.mark.parametrize("url", [
    "postgresql://u:s3cret@127.0.0.1:notaport/db", "postgresql://u:s3cret@[bad/db", "postgresql://u:s3cret@h/",
])
def test_a_malformed_state_url_is_a_clear_error_that_keeps_the_password(url: str, tmp_path: Path) -> None:
    from clirun import run_cli

    (tmp_path / "m").mkdir()
    run = run_cli(["plan", "-f", str(tmp_path / "m"), "--state", url])
    assert run.code == 1 and "state" in run.err and "s3cret" not in run.err + run.out
    assert "Traceback" not in run.err
