"""The state file: a SQLite database of what vodsync has done, and the lock that guards it.

`StateStore` owns the file's format (schema, migrations), its durability (WAL,
`synchronous=FULL`: a `kill -9` at any instant loses nothing committed and
never leaves the file unreadable), its permissions (0600 for the database, its
-wal/-shm siblings and the lock file; 0700 for a parent it creates) and the
writer lock (`flock` on `<state>.lock`, which names the holder's pid).

It holds three tables: `records` (one `Record` per item name), `hashes` (the
content-hash cache keyed by `(path, size, mtime_ns)`) and `meta` (key/value,
including `schema_version`). No credentials are ever stored: there is no column
for them and the store never sees them.

Every `sqlite3.Error` and `OSError` is translated into `StateError`; a failed
transaction is rolled back, so the file stays at its last committed state.

Read-only opens (`readonly=True`) take no lock and never create anything: when
the file does not exist they return an empty, in-memory view (so `vodsync plan`
works on a fresh checkout) whose writes raise `StateError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vodsync.errors import StateError, StateLocked
from vodsync.state.codec import COLUMNS, encode_row
from vodsync.state.interface import Nesting
from vodsync.state.records import Record, RecordStatus
from vodsync.state.sql import Migrations, SqlStore, migrate

__all__ = ["Record", "RecordStatus", "StateStore", "SCHEMA_VERSION"]

_FILE_MODE = 0o600
_DIR_MODE = 0o700

# Migrations, in order: (version reached, statements). Each runs in the same
# transaction as the schema_version bump, so a crash mid-migration leaves the
# previous version intact. Statements are executed one by one because
# `executescript` would commit the surrounding transaction.
_MIGRATIONS: Migrations = (
    (
        1,
        (
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
            """CREATE TABLE records (
                name TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                source TEXT NOT NULL,
                remote_id TEXT,
                reference_id TEXT,
                job_id TEXT,
                content_hash TEXT,
                size INTEGER,
                mtime_ns INTEGER,
                metadata TEXT NOT NULL DEFAULT '{}',
                options TEXT NOT NULL DEFAULT '{}',
                remote_status TEXT,
                intent TEXT,
                origin TEXT NOT NULL DEFAULT 'manifest',
                protect INTEGER NOT NULL DEFAULT 0,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at REAL,
                last_result TEXT,
                last_error TEXT,
                updated_at REAL NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE hashes (
                path TEXT NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                digest TEXT NOT NULL,
                PRIMARY KEY (path, size, mtime_ns)
            ) WITHOUT ROWID""",
        ),
    ),
)
SCHEMA_VERSION = _MIGRATIONS[-1][0]

_UPSERT = f"INSERT OR REPLACE INTO records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_READ_SLICE = 5000  # rows turned into records at a time by records()

# Short, user-facing causes for the sqlite error codes a user can actually meet.
_CAUSES = {
    "SQLITE_FULL": "the disk is full (or the state file reached its size limit)",
    "SQLITE_IOERR": "an I/O error occurred",
    "SQLITE_CORRUPT": "the file is corrupt",
    "SQLITE_NOTADB": "the file is not a SQLite database",
    "SQLITE_READONLY": "the file or its directory is read-only",
    "SQLITE_CANTOPEN": "the file cannot be opened",
    "SQLITE_PERM": "permission denied",
    "SQLITE_BUSY": "the database is busy (another writer?)",
    "SQLITE_LOCKED": "the database is locked",
}
_RETRYABLE = {"SQLITE_BUSY", "SQLITE_LOCKED"}


def _cause(exc: sqlite3.Error) -> tuple[str, bool]:
    name = getattr(exc, "sqlite_errorname", "") or ""
    base = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    cause = _CAUSES.get(name) or _CAUSES.get(base)
    text = f"{cause} ({exc})" if cause else str(exc)
    return text, name in _RETRYABLE or base in _RETRYABLE


def _open_failure(exc: BaseException, path: Path, verb: str) -> BaseException:
    """What opening the state file raises for `exc`: sqlite3 and OS errors as StateError."""
    if isinstance(exc, sqlite3.Error):
        text, retryable = _cause(exc)
        return StateError(f"state file {path}: cannot {verb}: {text}", retryable=retryable)
    if isinstance(exc, OSError):
        return StateError(f"state file {path}: cannot {verb}: {exc.strerror or exc}")
    return exc  # StateError, KeyboardInterrupt, ...: as they are


def _make_parents(directory: Path) -> None:
    """Create missing parent directories with mode 0700 (the umask may only remove bits)."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, _DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, _DIR_MODE)


def _tighten(path: Path) -> None:
    """Make an existing file we own 0600 (a looser mode from elsewhere is fixed, not trusted)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if st.st_mode & 0o777 != _FILE_MODE and st.st_uid == os.geteuid():
        os.chmod(path, _FILE_MODE)


class _WriterLock:
    """An exclusive `flock` on `<state>.lock` that records the holder's pid.

    flock is released by the kernel when the descriptor closes, including on
    process death, so a crashed daemon never leaves a stale lock. The file is
    never unlinked: unlinking would let two processes lock two different inodes.
    """

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        try:
            os.fchmod(fd, _FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateLocked(str(state_path), self._read_pid(fd)) from None
            data = f"{os.getpid()}\n".encode()
            # Write first, then truncate: a reader never sees an empty file mid-update.
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    @staticmethod
    def _read_pid(fd: int) -> int | None:
        try:
            return int(os.pread(fd, 32, 0).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock


def writer_pid(state_path: Path) -> int | None:
    """The pid of the process holding the state's writer lock right now, or None when nobody holds
    it (a reader's courtesy check: `plan` and `status` take no lock and may run beside an apply)."""
    lock = state_path.with_name(state_path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _WriterLock._read_pid(fd) or 0
    except OSError:
        return None
    finally:
        os.close(fd)  # also releases the shared lock, if taken
    return None


class StateStore(SqlStore):
    """The state file, opened for reading and (unless `readonly`) writing.

    One SQLite connection serves all threads; an `RLock` serialises its use, and
    a thread inside `transaction()` holds it until the transaction ends, so
    other threads' writes wait rather than interleave.
    """

    path: Path
    shared = False  # the writer lock admits one writer
    _P, _T = "?", ""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        *,
        readonly: bool,
        lock: _WriterLock | None,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = conn
        self._writer_lock = lock
        self._clock = clock
        self._shown: str | None = None  # what `location` says, when not the path (an empty view of a database)
        self._mutex = threading.RLock()
        self._nesting = Nesting(self._mutex, begin=self._begin, commit=self._commit, rollback=self._rollback,
                                where=lambda: f"file {self.path}")

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        lock: bool = True,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> StateStore:
        """Open (creating if needed, unless `readonly`) the state file at `path`.

        Raises `StateLocked` at once if another process holds the writer lock,
        `StateError` if the file is unreadable or was written by a newer schema.
        """
        path = Path(path).absolute()
        if readonly:
            return cls._open_readonly(path, clock)
        writer_lock: _WriterLock | None = None
        conn: sqlite3.Connection | None = None
        try:
            _make_parents(path.parent)
            if lock:
                writer_lock = _WriterLock(path)
            # Create the file ourselves with 0600: SQLite gives -wal/-shm the database's mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE))
            _tighten(path)
            conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(
                    f"state file {path}: cannot use WAL mode here (got {mode!r}); "
                    "is it on a network filesystem?"
                )
            # FULL: a commit is on disk before put() returns; the cost is one fsync per transaction.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            for suffix in ("-wal", "-shm"):
                _tighten(path.with_name(path.name + suffix))
            cls._migrate(conn, path)
        except BaseException as exc:
            cls._abandon(conn, writer_lock)
            failure = _open_failure(exc, path, "open")
            if failure is exc:
                raise
            raise failure from exc
        return cls(path, conn, readonly=False, lock=writer_lock, clock=clock)

    @classmethod
    def _connect_readonly(cls, path: Path) -> tuple[sqlite3.Connection, int]:
        """A read-only connection and the schema version.

        A WAL database opened `mode=ro` still needs its `-shm` file, which SQLite cannot
        create in a directory it may not write (a read-only mount, a backup): there the
        file is opened `immutable=1` (nobody can be writing it through that directory).
        """
        base = "file:" + quote(str(path)) + "?mode=ro"
        try:
            return cls._connect_uri(base, path)
        except sqlite3.OperationalError:
            if os.access(path.parent, os.W_OK):
                raise
        return cls._connect_uri(base + "&immutable=1", path)

    @classmethod
    def _connect_uri(cls, uri: str, path: Path) -> tuple[sqlite3.Connection, int]:
        conn = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only=ON")
            return conn, cls._version(conn, path)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def _open_readonly(cls, path: Path, clock: Callable[[], float]) -> StateStore:
        conn: sqlite3.Connection | None = None
        try:
            if path.exists():
                conn, version = cls._connect_readonly(path)
                if version > SCHEMA_VERSION:
                    raise StateError(cls._too_new(path, version))
                if 0 < version < SCHEMA_VERSION:
                    raise StateError(
                        f"state file {path} has schema version {version}, this vodsync needs "
                        f"{SCHEMA_VERSION}; open it once for writing (apply or the daemon) to migrate it"
                    )
                if version == SCHEMA_VERSION:
                    return cls(path, conn, readonly=True, lock=None, clock=clock)
                conn.close()  # an empty file (a writer died before creating the schema): empty view
            # Absent: an empty in-memory view, so `plan` on a fresh checkout works; nothing is created.
            return cls.empty_view(path, clock)
        except BaseException as exc:
            cls._abandon(conn, None)
            failure = _open_failure(exc, path, "read")
            if failure is exc:
                raise
            raise failure from exc

    @classmethod
    def empty_view(cls, path: Path, clock: Callable[[], float], *, shown: str | None = None) -> StateStore:
        """An empty, read-only state in memory: what a reader sees where nothing was recorded yet."""
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        cls._migrate(conn, path)
        conn.execute("PRAGMA query_only=ON")
        view = cls(path, conn, readonly=True, lock=None, clock=clock)
        view._shown = shown
        return view

    @staticmethod
    def _abandon(conn: sqlite3.Connection | None, lock: _WriterLock | None) -> None:
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        if lock is not None:
            lock.release()

    @staticmethod
    def _too_new(path: Path, version: int) -> str:
        return (
            f"state file {path} has schema version {version}, newer than this vodsync "
            f"understands ({SCHEMA_VERSION}); upgrade vodsync"
        )

    @staticmethod
    def _version(conn: sqlite3.Connection, path: Path) -> int:
        """The file's schema version: 0 for an empty file; StateError if it is someone else's database."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            if tables:
                raise StateError(f"{path} is a SQLite database but not a vodsync state file")
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        try:
            return int(row[0]) if row else 0
        except ValueError:
            raise StateError(f"state file {path} has an unreadable schema_version {row[0]!r}") from None

    @classmethod
    def _migrate(cls, conn: sqlite3.Connection, path: Path) -> None:
        # IMMEDIATE: two lock-less writers opening a fresh file at once migrate one after the other.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = cls._version(conn, path)
            if version > SCHEMA_VERSION:
                raise StateError(cls._too_new(path, version))
            migrate(conn, version, _MIGRATIONS, "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database (checkpointing the WAL) and release the writer lock. Idempotent."""
        with self._mutex:
            conn, self._conn = self._conn, None
            try:
                if conn is not None:
                    conn.close()
            except sqlite3.Error as exc:
                text, _ = _cause(exc)
                raise StateError(f"state file {self.path}: error while closing: {text}") from exc
            finally:
                if self._writer_lock is not None:
                    self._writer_lock.release()
                    self._writer_lock = None

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else ("locked" if self._writer_lock else "unlocked")
        return f"StateStore({str(self.path)!r}, {mode})"

    @property
    def location(self) -> str:
        return self._shown or str(self.path)

    @property
    def checkpoint_dir(self) -> Path:
        """Upload checkpoints live beside the state file, so a resume finds them after a crash."""
        return self.path.parent / f"{self.path.name}.checkpoints"

    # -- coordination: the writer lock makes this process the only writer -------------------------

    def claim(self, names: Sequence[str]) -> set[str]:
        return set(names)

    def release(self, names: Collection[str]) -> None:
        return None

    def is_leader(self) -> bool:
        return not self.readonly

    def alone(self, role: str) -> contextlib.AbstractContextManager[bool]:
        return contextlib.nullcontext(not self.readonly)

    def _row_slices(self, conn: sqlite3.Connection, query: str, args: list[Any]) -> Iterator[list[tuple[Any, ...]]]:
        cursor = conn.execute(query, args)
        while rows := cursor.fetchmany(_READ_SLICE):
            yield rows

    # -- plumbing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _using(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, under the mutex, with sqlite errors translated into StateError."""
        with self._mutex:
            conn = self._conn
            if conn is None:
                raise StateError(f"state file {self.path} is closed")
            try:
                yield conn
            except sqlite3.Error as exc:
                text, retryable = _cause(exc)
                raise StateError(
                    f"state file {self.path}: cannot {what}: {text}", retryable=retryable
                ) from exc

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Group writes atomically: all of them are committed, or none (`interface.Nesting`)."""
        self._writable("write")
        return self._nesting()

    def _begin(self) -> None:
        with self._using("begin a transaction") as conn:
            conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        with self._using("commit") as conn:
            conn.execute("COMMIT")

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            # A failed rollback leaves the connection's transaction to be discarded on close;
            # the file itself still holds only committed data (WAL frames without a commit are ignored).
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    # -- records ------------------------------------------------------------------------------

    def put_many(self, records: Iterable[Record]) -> None:
        """Insert or replace every record in one transaction (all or none), stamping `updated_at`."""
        self._writable("write records")
        now = self._clock()
        rows = [encode_row(r, now) for r in records]  # serialise first: a bad value writes nothing
        if not rows:
            return
        with self.transaction(), self._using("write records") as conn:
            conn.executemany(_UPSERT, rows)

    def delete(self, name: str) -> None:
        """Forget the record `name` (no error if there is none)."""
        self._writable("delete records")
        with self.transaction(), self._using(f"delete record {name!r}") as conn:
            conn.execute("DELETE FROM records WHERE name = ?", (name,))
