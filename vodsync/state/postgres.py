"""The state in PostgreSQL: one library shared by `apply` and `watch` processes on many hosts.

The tables (all in the schema `vodsync`, created and migrated by vodsync itself, versioned in
`meta.schema_version`) are those of the SQLite file (`records`, `hashes`, `meta`, through the
same codec) and the coordination the file's writer lock made unnecessary:

- `leases`: which process works on which item, until when, under which fencing token. A claim
  inserts missing rows and takes over expired ones with `FOR UPDATE SKIP LOCKED` (two claimers
  never wait on each other); a live holder renews its leases every third of `lease_seconds`;
  a holder that dies loses them when they expire, and the next claimer gets a new token.
- Fencing: every write of a record checks, in its own transaction and under a share lock on
  the lease row, that the writer still holds the item's lease with its token (or, writing
  without a lease, that nobody else holds a live one). A holder whose lease expired and was
  taken over cannot write over its successor's outcome: its write raises `LeaseLost`.
- `checkpoints`: the identity of multipart uploads (bucket, key, upload ID, parts), so another
  host that reads the same file can resume an upload a dead host started.
- `api_budget`: one theoretical arrival time per VOD operation (GCRA), shared by every process.
- The leader (interval drift pass, pruning, gc) holds a session advisory lock on a connection
  of its own; when its process dies, PostgreSQL releases the lock and another process takes it.

See docs/scale-out.md for the design and its limits.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from vodsync.errors import LeaseLost, StateError
from vodsync.state.codec import COLUMNS, encode_row
from vodsync.state.interface import Nesting
from vodsync.state.records import Record
from vodsync.state.sql import Migrations, SqlStore, migrate

try:
    import psycopg
except ImportError:  # pragma: no cover - only without the `postgres` extra
    psycopg = None  # type: ignore[assignment]

__all__ = ["LeaseLost", "PostgresStore", "SCHEMA_VERSION"]

log = logging.getLogger("vodsync.state")

DEFAULT_LEASE_SECONDS = 30.0
_LEADER_KEY = 0x766F_6473_796E_63  # "vodsync": the advisory lock of the account-wide roles
_MIGRATE_KEY = _LEADER_KEY + 1  # held (per transaction) while a process creates or migrates the schema

_MIGRATIONS: Migrations = (
    (
        1,
        (
            "CREATE SCHEMA IF NOT EXISTS vodsync",
            "CREATE TABLE vodsync.meta (key text PRIMARY KEY, value text NOT NULL)",
            """CREATE TABLE vodsync.records (
                name text PRIMARY KEY,
                kind text NOT NULL,
                status text NOT NULL,
                source text NOT NULL,
                remote_id text,
                reference_id text,
                job_id text,
                content_hash text,
                size bigint,
                mtime_ns bigint,
                metadata text NOT NULL DEFAULT '{}',
                options text NOT NULL DEFAULT '{}',
                remote_status text,
                intent text,
                origin text NOT NULL DEFAULT 'manifest',
                protect integer NOT NULL DEFAULT 0,
                attempts integer NOT NULL DEFAULT 0,
                next_attempt_at double precision,
                last_result text,
                last_error text,
                updated_at double precision NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX records_open_intents ON vodsync.records (name) WHERE intent IS NOT NULL",
            """CREATE TABLE vodsync.hashes (
                path text PRIMARY KEY, size bigint NOT NULL, mtime_ns bigint NOT NULL, digest text NOT NULL
            )""",
            """CREATE TABLE vodsync.leases (
                name text PRIMARY KEY,
                holder text NOT NULL,
                token bigint NOT NULL,
                expires_at timestamptz NOT NULL
            )""",
            "CREATE SEQUENCE vodsync.fence_tokens",
            """CREATE TABLE vodsync.checkpoints (
                key text PRIMARY KEY, value text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now()
            )""",
            "CREATE TABLE vodsync.api_budget (op text PRIMARY KEY, tat double precision NOT NULL)",
        ),
    ),
)
SCHEMA_VERSION = _MIGRATIONS[-1][0]

_ON_CONFLICT = f"ON CONFLICT (name) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in COLUMNS[1:])}"
_UPSERT = (
    f"INSERT INTO vodsync.records ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) {_ON_CONFLICT}"
)
# Batches of at least _COPY_FROM records go through COPY into a temporary table of this session,
# then one upsert from it: 100,000 records in 3.2 s instead of 6.2 s with executemany (a statement a row).
_COPY_FROM = 500
_COPY_TABLE = "pg_temp.vodsync_put"
_UPSERT_COPIED = (
    f"INSERT INTO vodsync.records ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM {_COPY_TABLE} "
    f"{_ON_CONFLICT}"
)
_READ_SLICE = 5000


def _row_chunks(conn: Any, query: str, args: Sequence[Any]) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of `query`, _READ_SLICE at a time, as the server sends them (libpq's chunked
    mode, libpq 17 and psycopg 3.2 on): a plain execute() holds the whole result in libpq until
    the last row is read, ~70 MiB more peak RSS over 100,000 records (bench/noop_plan_postgres.py).
    Older libraries read the result whole, then hand it out a slice at a time."""
    cursor = conn.cursor()
    if _chunked_mode():
        rows = cursor.stream(query, args, size=_READ_SLICE)
        while chunk := list(islice(rows, _READ_SLICE)):
            yield chunk
        return
    cursor.execute(query, args)
    while chunk := cursor.fetchmany(_READ_SLICE):
        yield chunk


@functools.cache
def _chunked_mode() -> bool:
    major, minor = (int(part) for part in psycopg.__version__.split(".")[:2])
    return (major, minor) >= (3, 2) and psycopg.pq.version() >= 170000


def _copy_upsert(conn: Any, rows: list[tuple[Any, ...]]) -> None:
    """Upsert many rows in the caller's transaction: COPY into a temporary table, one INSERT …
    ON CONFLICT from it, and the table emptied again (a later batch of the same transaction
    must not write these rows a second time)."""
    latest = {row[0]: row for row in rows}  # a name twice in the batch: the last one wins, as with executemany
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_COPY_TABLE.split('.')[1]} (LIKE vodsync.records)")
    with conn.cursor() as cur:
        with cur.copy(f"COPY {_COPY_TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in latest.values():
                copy.write_row(row)
        cur.execute(_UPSERT_COPIED)
        cur.execute(f"TRUNCATE {_COPY_TABLE}")


def _require_driver() -> None:
    if psycopg is None:
        raise StateError("a postgresql:// state needs psycopg: pip install 'vodsync[postgres]'")


def _failure(exc: BaseException, where: str, what: str) -> BaseException:
    """A psycopg error as a `StateError` (a lost connection is retryable); others as they are."""
    if psycopg is not None and isinstance(exc, psycopg.Error):
        retryable = isinstance(exc, psycopg.OperationalError)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StateError(f"state {where}: cannot {what}: {text}", retryable=retryable)
    return exc


class _Connection:
    """One psycopg connection (autocommit; transactions are explicit) under a lock of its own."""

    def __init__(self, url: str, where: str, purpose: str) -> None:
        self.where = where
        self.lock = threading.RLock()
        self._url, self._purpose = url, purpose
        self.conn = self._connect()

    def _connect(self) -> Any:
        try:
            return psycopg.connect(self._url, autocommit=True, application_name=f"vodsync {self._purpose}",
                                   connect_timeout=10)
        except psycopg.Error as exc:
            raise _failure(exc, self.where, "connect") from None

    @contextlib.contextmanager
    def using(self, what: str) -> Iterator[Any]:
        """The connection, under the lock; one lost since its last use (the server restarted, the
        network dropped) is replaced first. psycopg errors come out as `StateError`."""
        with self.lock:
            if self.conn.closed or self.conn.broken:
                self.conn = self._connect()
            try:
                yield self.conn
            except psycopg.Error as exc:
                failure = _failure(exc, self.where, what)
                raise failure from None

    def close(self) -> None:
        with self.lock, contextlib.suppress(psycopg.Error):
            self.conn.close()


class PostgresStore(SqlStore):
    """The state in a PostgreSQL database (see the module docstring)."""

    shared = True
    _P, _T = "%s", "vodsync."

    def __init__(
        self,
        url_shown: str,
        main: _Connection,
        *,
        url: str,
        readonly: bool,
        clock: Callable[[], float],
        local_dir: Path,
        lease_seconds: float,
    ) -> None:
        self._where = url_shown
        self._url = url
        self._main = main
        self.readonly = readonly
        self._clock = clock
        self._local_dir = local_dir
        self.lease_seconds = lease_seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._nesting = Nesting(main.lock, begin=lambda: self._exec("BEGIN"), commit=lambda: self._exec("COMMIT"),
                                rollback=self._rollback, where=lambda: url_shown)
        self._held: dict[str, int] = {}  # item name -> fencing token of the lease this process holds
        self._lost: set[str] = set()  # leases a renewal found taken over (their writes are refused)
        self._held_lock = threading.Lock()
        self._side: _Connection | None = None  # renewals and the API budget: never behind the main lock
        self._leader: _Connection | None = None
        self._renewer: threading.Thread | None = None
        self._closing = threading.Event()

    # -- opening and closing ---------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        *,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
        local_dir: Path,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        shown: str | None = None,
    ) -> PostgresStore:
        """Connect to the database at `url`, creating or migrating the schema unless `readonly`.

        Raises `StateError` if the database cannot be reached, holds a newer schema, or (read
        only) an older one."""
        _require_driver()
        from vodsync.state.location import StateLocation

        where = shown or str(StateLocation(url=url))
        main = _Connection(url, where, "state")
        try:
            with main.using("read the schema version") as conn:
                version = cls._version(conn)
                if version > SCHEMA_VERSION:
                    raise StateError(f"state {where} has schema version {version}, newer than this vodsync "
                                     f"understands ({SCHEMA_VERSION}); upgrade vodsync")
                if version < SCHEMA_VERSION:
                    if readonly:
                        if version:
                            raise StateError(f"state {where} has schema version {version}, this vodsync needs "
                                             f"{SCHEMA_VERSION}; run apply or the daemon once to migrate it")
                        main.close()
                        return _empty_view(where, clock, local_dir)  # nothing is created by a reader
                    cls._migrate(conn, where)
        except BaseException:
            main.close()
            raise
        return cls(where, main, url=url, readonly=readonly, clock=clock, local_dir=local_dir,
                   lease_seconds=lease_seconds)

    @staticmethod
    def _version(conn: Any) -> int:
        # pg_tables, not to_regclass: a name lookup may answer from a cache that has not yet seen
        # another session's just-committed CREATE (a process that waited for the migration lock).
        if not conn.execute("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = 'vodsync' "
                            "AND tablename = 'meta'").fetchone():
            return 0
        row = conn.execute("SELECT value FROM vodsync.meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    @classmethod
    def _migrate(cls, conn: Any, where: str) -> None:
        with conn.transaction():
            # Two processes opening a new database at once migrate one after the other.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_KEY,))
            before = cls._version(conn)
            reached = migrate(conn, before, _MIGRATIONS, "INSERT INTO vodsync.meta (key, value) VALUES "
                              "('schema_version', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
            if reached != before:
                log.info("state %s: schema version %d", where, reached)

    def close(self) -> None:
        """Release this process's leases and leadership, and disconnect. Idempotent."""
        self._closing.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.join(timeout=5)
        with contextlib.suppress(StateError):
            if not self.readonly:
                self.release(list(self._held))
        for conn in (self._leader, self._side, self._main):
            if conn is not None:
                conn.close()
        self._leader = self._side = None

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r}, {'readonly' if self.readonly else self.holder})"

    @property
    def location(self) -> str:
        return self._where

    @property
    def checkpoint_dir(self) -> Path:
        return self._local_dir / "checkpoints"

    # -- plumbing --------------------------------------------------------------------------------

    def _using(self, what: str) -> contextlib.AbstractContextManager[Any]:
        return self._main.using(what)

    def _row_slices(self, conn: Any, query: str, args: list[Any]) -> Iterator[list[tuple[Any, ...]]]:
        return _row_chunks(conn, query, args)

    def _exec(self, sql: str, args: Any = None) -> None:
        with self._main.using("write") as conn:
            conn.execute(sql, args)

    def _rollback(self) -> None:
        with contextlib.suppress(Exception), self._main.using("roll back") as conn:
            conn.execute("ROLLBACK")

    def _side_connection(self) -> _Connection:
        with self._held_lock:
            if self._side is None:
                self._side = _Connection(self._url, self._where, "leases")
            return self._side

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        self._writable("write")
        return self._nesting()

    # -- records ---------------------------------------------------------------------------------

    def put_many(self, records: Iterable[Record]) -> None:
        """Insert or replace every record in one transaction, fenced by this process's leases."""
        self._writable("write records")
        now = self._clock()
        rows = [encode_row(r, now) for r in records]
        if not rows:
            return
        with self.transaction(), self._main.using("write records") as conn:
            self._fence(conn, [row[0] for row in rows])
            if len(rows) >= _COPY_FROM:
                _copy_upsert(conn, rows)
                return
            with conn.cursor() as cur:
                cur.executemany(_UPSERT, rows)

    def delete(self, name: str) -> None:
        self._writable("delete records")
        with self.transaction(), self._main.using(f"delete record {name!r}") as conn:
            self._fence(conn, [name])
            conn.execute("DELETE FROM vodsync.records WHERE name = %s", (name,))

    def _fence(self, conn: Any, names: list[str]) -> None:
        """Refuse the write unless this process may write these items now (the module docstring).
        The share lock on the lease rows holds off a takeover until this transaction ends."""
        with self._held_lock:
            held = {n: self._held[n] for n in names if n in self._held}
            lost = [n for n in names if n in self._lost]
        if lost:
            raise LeaseLost(lost[0], "its lease expired and another process took it over")
        rows = conn.execute(
            "SELECT name, holder, token, expires_at > now() FROM vodsync.leases WHERE name = ANY(%s) FOR SHARE",
            (names,),
        ).fetchall()
        leases = {name: (holder, token, live) for name, holder, token, live in rows}
        for name, token in held.items():
            lease = leases.get(name)
            if lease is None or lease[1] != token:
                self._mark_lost([name])
                raise LeaseLost(name, "its lease expired and another process took it over")
        for name, (holder, _token, live) in leases.items():
            if name not in held and live and holder != self.holder:
                raise LeaseLost(name, f"it is being worked on by {holder.rsplit(':', 1)[0]} (host:pid)")

    def _mark_lost(self, names: Iterable[str]) -> None:
        with self._held_lock:
            for name in names:
                if self._held.pop(name, None) is not None:
                    self._lost.add(name)

    # -- leases ----------------------------------------------------------------------------------

    def claim(self, names: Sequence[str]) -> set[str]:
        """Take the leases of `names` that are free or expired (never waiting for a claimer that
        holds a row: SKIP LOCKED); names this process already holds are not claimed again."""
        self._writable("claim items")
        with self._held_lock:
            wanted = sorted({n for n in names if n not in self._held})
        if not wanted:
            return set()
        ttl = self.lease_seconds
        side = self._side_connection()
        with side.using("claim items") as conn, conn.transaction():
            got = dict(conn.execute(
                "INSERT INTO vodsync.leases (name, holder, token, expires_at) "
                "SELECT name, %s, nextval('vodsync.fence_tokens'), now() + %s * interval '1 second' "
                "FROM unnest(%s::text[]) AS name ON CONFLICT (name) DO NOTHING RETURNING name, token",
                (self.holder, ttl, wanted)).fetchall())
            rest = [n for n in wanted if n not in got]
            if rest:
                got.update(conn.execute(
                    "UPDATE vodsync.leases SET holder = %s, token = nextval('vodsync.fence_tokens'), "
                    "expires_at = now() + %s * interval '1 second' WHERE name IN ("
                    "  SELECT name FROM vodsync.leases WHERE name = ANY(%s) AND expires_at < now() "
                    "  FOR UPDATE SKIP LOCKED) RETURNING name, token",
                    (self.holder, ttl, rest)).fetchall())
        with self._held_lock:
            self._held.update(got)
            self._lost.difference_update(got)
        if got:
            self._start_renewer()
        return set(got)

    def release(self, names: Collection[str]) -> None:
        with self._held_lock:
            tokens = [self._held.pop(n) for n in names if n in self._held]
            self._lost.difference_update(names)
        if not tokens:
            return
        with self._side_connection().using("release items") as conn:
            conn.execute("DELETE FROM vodsync.leases WHERE holder = %s AND token = ANY(%s)", (self.holder, tokens))

    def held(self) -> dict[str, int]:
        """The leases this process holds: item name -> fencing token."""
        with self._held_lock:
            return dict(self._held)

    def renew(self) -> set[str]:
        """Extend every lease this process holds; returns those found lost (taken over)."""
        with self._held_lock:
            tokens = dict(self._held)
        if not tokens:
            return set()
        with self._side_connection().using("renew leases") as conn:
            kept = {row[0] for row in conn.execute(
                "UPDATE vodsync.leases SET expires_at = now() + %s * interval '1 second' "
                "WHERE holder = %s AND token = ANY(%s) RETURNING token",
                (self.lease_seconds, self.holder, list(tokens.values()))).fetchall()}
        lost = {name for name, token in tokens.items() if token not in kept}
        if lost:
            log.warning("lost the lease of %d item(s) (%s): another process may take them over",
                        len(lost), ", ".join(sorted(lost)[:5]))
            self._mark_lost(lost)
        return lost

    def _start_renewer(self) -> None:
        with self._held_lock:
            if self._renewer is not None or self._closing.is_set():
                return
            self._renewer = threading.Thread(target=self._renew_loop, name="vodsync-lease-renewal", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._closing.wait(self.lease_seconds / 3):
            try:
                self.renew()
            except StateError as err:  # the database is unreachable: keep trying until the leases expire
                log.warning("cannot renew leases: %s", err)

    # -- the leader ------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """Hold (or try to take) the account-wide roles' advisory lock. A lost connection loses
        the lock with it: the next call tries to take it again on a new one."""
        if self.readonly:
            return False
        try:
            if self._leader is not None:
                with self._leader.using("check leadership") as conn:
                    conn.execute("SELECT 1")
                return True
        except StateError:
            self._leader.close()
            self._leader = None
        leader = _Connection(self._url, self._where, "leader")
        with leader.using("take leadership") as conn:
            took = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LEADER_KEY,)).fetchone()[0]
        if not took:
            leader.close()
            return False
        self._leader = leader
        return True

    @contextlib.contextmanager
    def alone(self, role: str) -> Iterator[bool]:
        """Hold the advisory lock of `role` for the block, if no other process holds it."""
        if self.readonly:
            yield False
            return
        conn = _Connection(self._url, self._where, role)
        try:
            with conn.using(f"take the {role} lock") as c:
                took = c.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"vodsync:{role}",)).fetchone()[0]
            yield bool(took)
        finally:
            conn.close()  # closing the session releases its advisory locks

    # -- multipart upload checkpoints (cloud/upload.py: SharedCheckpoints) -------------------------

    def get_checkpoint(self, key: str) -> str | None:
        with self._side_connection().using("read an upload checkpoint") as conn:
            row = conn.execute("SELECT value FROM vodsync.checkpoints WHERE key = %s", (key,)).fetchone()
        return None if row is None else row[0]

    def put_checkpoint(self, key: str, value: str) -> None:
        with self._side_connection().using("write an upload checkpoint") as conn:
            conn.execute("INSERT INTO vodsync.checkpoints (key, value) VALUES (%s, %s) ON CONFLICT (key) "
                         "DO UPDATE SET value = EXCLUDED.value, updated_at = now()", (key, value))

    def delete_checkpoint(self, key: str) -> None:
        with self._side_connection().using("forget an upload checkpoint") as conn:
            conn.execute("DELETE FROM vodsync.checkpoints WHERE key = %s", (key,))

    # -- the shared API budget -------------------------------------------------------------------

    def take(self, op: str, rate: float, burst: float) -> float:
        """Reserve the next call of `op` in the account-wide bucket (GCRA on the server's clock):
        the seconds to wait before making it (0 when it may go now)."""
        with self._side_connection().using("take an API token") as conn:
            wait = conn.execute(
                "INSERT INTO vodsync.api_budget AS b (op, tat) "
                "VALUES (%(op)s, extract(epoch FROM clock_timestamp()) + 1.0 / %(rate)s) "
                "ON CONFLICT (op) DO UPDATE SET "
                "  tat = greatest(b.tat, extract(epoch FROM clock_timestamp())) + 1.0 / %(rate)s "
                "RETURNING tat - %(burst)s / %(rate)s - extract(epoch FROM clock_timestamp())",
                {"op": op, "rate": float(rate), "burst": float(burst)}).fetchone()[0]
        return max(0.0, float(wait))


def _empty_view(where: str, clock: Callable[[], float], local_dir: Path) -> Any:
    """A database with no vodsync schema yet, read only: an empty, in-memory state (so `plan`
    against a new database works, and creates nothing)."""
    from vodsync.state.store import StateStore

    return StateStore.empty_view(local_dir / "state.db", clock, shown=where)
