"""What the two SQL backends share, written once: reading records (in slices, the collector
paused), single-record reads and writes, the hash cache and meta.

A backend (`store.StateStore`, `postgres.PostgresStore`) says how to reach its connection
(`_using`), how to stream a query's rows (`_row_slices`), its parameter marker (`_P`: `?` or
`%s`), its tables' prefix (`_T`: `""` or `"vodsync."`), and how it writes a batch of records
(`put_many`: SQLite's upsert, or PostgreSQL's fenced upsert).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from vodsync.errors import StateError
from vodsync.state.codec import COLUMNS, decode_rows
from vodsync.state.records import Record, RecordStatus

__all__ = ["Migrations", "SqlStore", "migrate"]

# (version reached, statements), in order: a backend's schema history.
Migrations = tuple[tuple[int, tuple[str, ...]], ...]


def migrate(conn: Any, version: int, migrations: Migrations, set_version: str) -> int:
    """Run the statements of every migration past `version`, each followed by `set_version`
    (given the version it reaches), inside the caller's transaction; returns the version reached."""
    for target, statements in migrations:
        if target <= version:
            continue
        for statement in statements:
            conn.execute(statement)
        conn.execute(set_version, (str(target),))
        version = target
    return version


class SqlStore:
    """The statements both backends run the same way (see the module docstring)."""

    _P: ClassVar[str]  # the driver's parameter marker
    _T: ClassVar[str]  # prefix of the table names
    readonly: bool

    # -- what a backend provides -----------------------------------------------------------------

    def _using(self, what: str) -> contextlib.AbstractContextManager[Any]:
        """The connection, under the store's lock, driver errors raised as `StateError`."""
        raise NotImplementedError

    def _row_slices(self, conn: Any, query: str, args: list[Any]) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of one statement (one snapshot), a slice at a time."""
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def put_many(self, records: Iterable[Record]) -> None:
        raise NotImplementedError

    @property
    def location(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise StateError(f"state {self.location} is open read-only; cannot {what}")

    def _select(self) -> str:
        return f"SELECT {', '.join(COLUMNS)} FROM {self._T}records"

    def records(
        self, *, statuses: Iterable[RecordStatus] | None = None, with_intent: bool = False
    ) -> dict[str, Record]:
        """Every record, by name, read in one query; or only those in `statuses` and/or
        carrying an intent (`with_intent`), which after a normal run are a handful of rows:
        reading them does not cost a full decode of a large library."""
        where, args = [], []
        if statuses is not None:
            wanted = [str(s) for s in statuses]
            where.append(f"status IN ({', '.join([self._P] * len(wanted))})" if wanted else "1 = 0")
            args.extend(wanted)
        if with_intent:
            where.append("intent IS NOT NULL")
        query = self._select() + (" WHERE " + " AND ".join(where) if where else "")
        # The collector would scan the growing heap again and again while 100,000 rows and
        # records (none of them cyclic) are built; pausing it roughly halves the time.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            out: dict[str, Record] = {}
            with self._using("read records") as conn:
                # Rows turned into records a slice at a time: all 100,000 rows and their JSON texts
                # at once raised the peak RSS of a no-op plan by ~50 MiB (bench/memory.py).
                for rows in self._row_slices(conn, query, args):
                    for record in decode_rows(rows):
                        out[record.name] = record
            return out
        finally:
            if was_enabled:
                gc.enable()

    def status_counts(self) -> dict[str, int]:
        """How many records are in each status (one aggregate query, no record decoded)."""
        with self._using("count records") as conn:
            return dict(conn.execute(f"SELECT status, COUNT(*) FROM {self._T}records GROUP BY status").fetchall())

    def retry_times(self) -> list[float]:
        """Every recorded `next_attempt_at` (items waiting out a retry backoff)."""
        with self._using("read retry times") as conn:
            rows = conn.execute(f"SELECT next_attempt_at FROM {self._T}records WHERE next_attempt_at IS NOT NULL")
            return [row[0] for row in rows.fetchall()]

    def get(self, name: str) -> Record | None:
        with self._using(f"read record {name!r}") as conn:
            row = conn.execute(f"{self._select()} WHERE name = {self._P}", (name,)).fetchone()
        return None if row is None else decode_rows([row])[0]

    def put(self, record: Record) -> None:
        """Insert or replace `record` (by name), stamping `updated_at` with the clock."""
        self.put_many((record,))

    # -- content-hash cache ----------------------------------------------------------------------

    def cached_hash(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The digest remembered for `path` if its size and mtime are unchanged, else None."""
        p = self._P
        with self._using("read the hash cache") as conn:
            row = conn.execute(
                f"SELECT digest FROM {self._T}hashes WHERE path = {p} AND size = {p} AND mtime_ns = {p}",
                (path, size, mtime_ns),
            ).fetchone()
        return None if row is None else row[0]

    def remember_hash(self, path: str, size: int, mtime_ns: int, digest: str) -> None:
        """Remember `digest` for this version of `path`; older versions of the path are forgotten."""
        self._writable("write the hash cache")
        p = self._P
        with self.transaction(), self._using("write the hash cache") as conn:
            # One row per path keeps the table as small as the set of files ever seen.
            conn.execute(f"DELETE FROM {self._T}hashes WHERE path = {p}", (path,))
            conn.execute(f"INSERT INTO {self._T}hashes (path, size, mtime_ns, digest) VALUES ({p}, {p}, {p}, {p})",
                         (path, size, mtime_ns, digest))

    # -- meta ------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._using(f"read meta {key!r}") as conn:
            row = conn.execute(f"SELECT value FROM {self._T}meta WHERE key = {self._P}", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Set a key/value (for example the drop-folder ledger). `schema_version` is the store's own."""
        self._writable("write meta")
        if key == "schema_version":
            raise StateError("schema_version is managed by the state store")
        if not isinstance(value, str):
            raise TypeError(f"meta values are strings, got {type(value).__name__}")
        with self.transaction(), self._using(f"write meta {key!r}") as conn:
            conn.execute(f"INSERT INTO {self._T}meta (key, value) VALUES ({self._P}, {self._P}) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))
