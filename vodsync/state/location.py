"""Where the state is, and opening it: a SQLite file (the default) or a PostgreSQL database.

The `state` setting (config key `state`, flag `--state`, environment `VODSYNC_STATE`) is either
a path (`.vodsync/state.db`) or a URL, `postgresql://USER@HOST:PORT/DB` (libpq's URI syntax,
so `?host=/run/postgresql` and the PG* environment variables work as in psql). A password in
the URL works, but is never shown: messages and plans print the URL without it (`str()`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from vodsync.config import is_url
from vodsync.errors import ConfigError
from vodsync.state.interface import Store

__all__ = ["ENV_STATE", "StateLocation"]

ENV_STATE = "VODSYNC_STATE"


def _without_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        if not parts.password:
            return url
    except ValueError:  # not a URL at all: show none of it
        return url.split("://", 1)[0] + "://…"
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True)
class StateLocation:
    """A SQLite file (`path`) or a PostgreSQL database (`url`); exactly one of them is set."""

    path: Path | None = None
    url: str | None = None

    @classmethod
    def parse(cls, value: str | Path) -> StateLocation:
        """A location from a setting: a postgresql:// URL, or else a path."""
        if is_url(value):
            url = str(value)
            try:
                parts = urlsplit(url)
                _ = parts.port, parts.password  # both raise ValueError on a malformed address
            except ValueError as exc:
                raise ConfigError(f"state {_without_password(url)} is not a valid postgresql:// URL: {exc}") from None
            if not parts.path.strip("/") and "dbname=" not in parts.query:
                raise ConfigError(f"state URL {_without_password(url)} names no database "
                                  "(expected postgresql://USER@HOST:PORT/DB)")
            return cls(url=url)
        if isinstance(value, str) and "://" in value:
            scheme = value.split("://", 1)[0]
            raise ConfigError(f"state {scheme}://… is not supported: give a file path or a postgresql:// URL")
        return cls(path=Path(value))

    @property
    def shared(self) -> bool:
        """Whether several processes on several hosts may use this state at once (PostgreSQL)."""
        return self.url is not None

    def __str__(self) -> str:
        return _without_password(self.url) if self.url is not None else str(self.path)

    @property
    def local_dir(self) -> Path:
        """Where this host keeps what belongs beside the state (checkpoints, the embedded
        emulator's data): the state file's folder, or for a database, a folder of this user's
        named after it."""
        if self.path is not None:
            return self.path.parent
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        digest = hashlib.sha256(str(self).encode()).hexdigest()[:16]
        return base / "vodsync" / digest

    def exists(self) -> bool:
        """Whether there is a state here yet (a database is taken to exist: asking costs a connection)."""
        return self.path is None or self.path.exists()

    def writer_pid(self) -> int | None:
        """The pid of the process applying to this state now (a SQLite file's writer lock); None
        for a database, where processes share the work item by item."""
        if self.path is None:
            return None
        from vodsync.state.store import writer_pid

        return writer_pid(self.path)

    def open(
        self,
        *,
        readonly: bool = False,
        lock: bool = True,
        clock: Callable[[], float] = time.time,
        lease_seconds: float | None = None,
    ) -> Store:
        """Open the state (see `StateStore.open` and `PostgresStore.open`)."""
        if self.url is not None:
            from vodsync.state.postgres import DEFAULT_LEASE_SECONDS, PostgresStore

            return PostgresStore.open(self.url, readonly=readonly, clock=clock, local_dir=self.local_dir,
                                      lease_seconds=lease_seconds or DEFAULT_LEASE_SECONDS)
        from vodsync.state.store import StateStore

        assert self.path is not None
        return StateStore.open(self.path, lock=lock, readonly=readonly, clock=clock)
