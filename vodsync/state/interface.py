"""What every state backend offers: the `Store` Protocol, and the bookkeeping of nested
transactions that both backends share.

Two backends implement it: `StateStore` (SQLite, one file, one writer at a time: `store.py`) and
`PostgresStore` (PostgreSQL, any number of processes on any hosts at once: `postgres.py`).
`location.open_store` picks one from the `state` setting.

Coordination between processes is part of the interface, so the engine never asks which
backend it has:

- `claim(names)` takes the items this process may work on now. With SQLite the writer lock
  already makes the process the only writer, so every item is claimed; with PostgreSQL each
  item has a lease with an expiry and a fencing token (`docs/scale-out.md`).
- `release(names)` gives claims back once the work is recorded.
- `is_leader()` says whether this process runs the account-wide roles (the interval drift
  pass, pruning, gc): with SQLite the writer is the leader; with PostgreSQL an advisory lock.
- `tokens` is the `TokenStore` that spreads VOD calls of all processes over the account's limits.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from vodsync.errors import StateError
from vodsync.state.records import Record, RecordStatus

__all__ = ["Nesting", "Store"]


@runtime_checkable
class Store(Protocol):
    """The state, opened for reading and (unless `readonly`) writing."""

    readonly: bool
    shared: bool  # several processes may write it at once (PostgreSQL): claims matter

    @property
    def location(self) -> str:
        """Where the state is, for messages (a path, or a URL without its password)."""
        ...

    @property
    def checkpoint_dir(self) -> Path:
        """Where this host keeps its upload checkpoints (files on local disk)."""
        ...

    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(self, *exc: object) -> None: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...
    def records(
        self, *, statuses: Iterable[RecordStatus] | None = None, with_intent: bool = False
    ) -> dict[str, Record]: ...
    def status_counts(self) -> dict[str, int]: ...
    def retry_times(self) -> list[float]: ...
    def get(self, name: str) -> Record | None: ...
    def put(self, record: Record) -> None: ...
    def put_many(self, records: Iterable[Record]) -> None: ...
    def delete(self, name: str) -> None: ...

    def cached_hash(self, path: str, size: int, mtime_ns: int) -> str | None: ...
    def remember_hash(self, path: str, size: int, mtime_ns: int, digest: str) -> None: ...
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...

    def claim(self, names: Sequence[str]) -> set[str]:
        """Of `names`, those this process now holds (and may work on) until it releases them."""
        ...

    def release(self, names: Collection[str]) -> None: ...

    def is_leader(self) -> bool:
        """Whether this process runs the account-wide roles now (asked before each use)."""
        ...

    def alone(self, role: str) -> contextlib.AbstractContextManager[bool]:
        """Within the block, True when no other process runs `role` (say "gc") on this state;
        False when one does (and this one should not)."""
        ...


class Nesting:
    """Nested `transaction()` blocks over one connection: only the outermost begins and commits.

    If an inner block fails, the whole transaction is rolled back even if the caller catches
    the error (the database may already have rolled it back). The store's mutex is held from
    the outermost begin to its end, so other threads' writes wait rather than interleave.
    """

    def __init__(
        self,
        mutex: threading.RLock,
        *,
        begin: Callable[[], None],
        commit: Callable[[], None],
        rollback: Callable[[], None],
        where: Callable[[], str],
    ) -> None:
        self._mutex = mutex
        self._begin, self._commit, self._rollback, self._where = begin, commit, rollback, where
        self._depth = 0
        self._doomed = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._mutex:
            if self._depth:
                self._depth += 1
                try:
                    yield
                except BaseException:
                    self._doomed = True
                    raise
                finally:
                    self._depth -= 1
                return
            self._begin()
            self._depth, self._doomed = 1, False
            try:
                yield
                if self._doomed:
                    raise StateError(f"state {self._where()}: a write inside this transaction failed; rolled back")
                self._commit()
            except BaseException:
                self._rollback()
                raise
            finally:
                self._depth, self._doomed = 0, False
