"""Helpers for the end-to-end CLI tests: a workspace (manifests, media, state) and the CLI run in-process.

`Workspace` writes manifest files and local media into a tmp directory, serves
URL sources from a loopback HTTP server, seeds objects for `register` items into
a bucket with the account key (returning FileURLs in the emulator's form
`http://127.0.0.1:PORT/BUCKET/KEY`), and runs `vodsync.cli.main([...])` with the
emulator's credentials and `--endpoint`, capturing stdout, stderr and the exit code.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from clirun import ACCOUNT_ENV, Run, run_cli
from sources import SourceServer

from vodsync.emulator import Emulator

ENV = ACCOUNT_ENV
SEED_BUCKET = "customer-media"
# Write calls: anything that creates, changes or deletes media or objects.
READ_CALLS = frozenset({
    "GetVideoInfo", "GetVideoInfos", "GetImageInfo", "GetAttachedMediaInfo", "GetURLUploadInfos",
    "SearchMedia", "oss:GET", "oss:HEAD",
})


def mp4(size: int, fill: bytes = b"v") -> bytes:
    head = b"\x00\x00\x00\x18ftypmp42"
    return head + fill * max(size - len(head), 0)


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
VTT = b"WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n"


class Workspace:
    def __init__(self, root: Path, emulator: Emulator, sources: SourceServer) -> None:
        self.root = root
        self.emulator = emulator
        self.sources = sources
        self.manifests = root / "manifests"
        self.manifests.mkdir(parents=True, exist_ok=True)
        self.state = root / "state.db"

    # ---- writing the desired state

    def file(self, rel: str, data: bytes) -> Path:
        path = self.manifests / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def manifest(self, media: list[dict[str, Any]], name: str = "library.yaml",
                 defaults: dict[str, Any] | None = None) -> Path:
        doc: dict[str, Any] = {}
        if defaults:
            doc["defaults"] = defaults
        doc["media"] = media
        path = self.manifests / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def url(self, path: str, body: bytes) -> str:
        return self.sources.add(path, body)

    def seed_object(self, key: str, data: bytes, bucket: str = SEED_BUCKET) -> str:
        """Put an object with the account key; returns its FileURL for a `register` item."""
        import oss2

        self.emulator.oss.ensure_bucket(bucket)
        account = oss2.Auth(self.emulator.access_key_id, self.emulator.access_key_secret)
        oss2.Bucket(account, self.emulator.url, bucket).put_object(key, data)
        return f"{self.emulator.url}/{bucket}/{key}"

    def five_kinds(self) -> list[dict[str, Any]]:
        """One item of every kind, with local files, a served URL and a seeded object."""
        self.file("media/intro.mp4", mp4(4000))
        self.file("media/logo.png", PNG)
        self.file("media/intro.en.vtt", VTT)
        return [
            {"name": "intro", "type": "video", "file": "media/intro.mp4", "title": "Intro",
             "tags": ["intro", "demo"], "description": "First episode"},
            {"name": "logo", "type": "image", "file": "media/logo.png", "title": "Logo", "tags": ["brand"]},
            {"name": "intro-subs", "type": "attached", "file": "media/intro.en.vtt",
             "business_type": "subtitle", "title": "Intro subtitles"},
            {"name": "trailer", "type": "url", "url": self.url("/src/trailer.mp4", mp4(3000, b"t")),
             "title": "Trailer", "tags": ["promo"]},
            {"name": "archive", "type": "register",
             "file_url": self.seed_object("archive/old.mp4", mp4(2500, b"a")), "title": "Archive"},
        ]

    # ---- running the CLI

    def cli(self, *argv: str, manifests: bool = True, state: bool = True, endpoint: bool = True,
            env: dict[str, str] | None = None) -> Run:
        """`vodsync ARGV` in-process, pointed at this workspace and the emulator."""
        args = list(argv)
        command = args[0]
        if manifests and command in ("plan", "apply", "validate", "watch"):
            args += ["-f", str(self.manifests)]
        if state and command in ("plan", "apply", "status", "gc", "watch"):
            args += ["--state", str(self.state)]
        if endpoint and command in ("plan", "apply", "gc", "watch"):
            args += ["--endpoint", self.emulator.url]
        if command == "apply" and "--yes" not in args:
            args.append("--yes")
        return run_cli(args, env)

    def apply(self, *extra: str) -> Run:
        return self.cli("apply", "--wait", "20", *extra)

    # ---- reading the outcome

    def status(self) -> dict[str, dict[str, Any]]:
        run = self.cli("status", "--json")
        assert run.code == 0, run
        return {r["name"]: r for r in run.json()}

    def records(self) -> dict[str, sqlite3.Row]:
        """The state file's records read directly (read-only), for checks `status` does not show."""
        con = sqlite3.connect(f"file:{self.state}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        try:
            return {r["name"]: r for r in con.execute("SELECT * FROM records")}
        finally:
            con.close()

    def vod(self) -> dict[str, list[dict[str, Any]]]:
        state = self.emulator.state()
        return {k: state[k] for k in ("videos", "images", "attached", "url_jobs", "objects")}

    def calls(self) -> Counter[str]:
        return Counter(self.emulator.calls())

    def writes(self, since: Counter[str]) -> Counter[str]:
        """Calls made since `since` that are not reads."""
        now = self.calls()
        now.subtract(since)
        return Counter({k: v for k, v in now.items() if v > 0 and k not in READ_CALLS})


def delta(after: Counter[str], before: Counter[str]) -> Counter[str]:
    out = Counter(after)
    out.subtract(before)
    return Counter({k: v for k, v in out.items() if v})


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@contextlib.contextmanager
def workspace(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """A fresh workspace in tmp_path (also the working directory) against `emulator`."""
    monkeypatch.chdir(tmp_path)
    for name in ("VODSYNC_ENDPOINT", "ALIBABA_CLOUD_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    server = SourceServer()
    try:
        yield Workspace(tmp_path, emulator, server)
    finally:
        server.close()


@pytest.fixture
def ws(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """A fresh workspace in tmp_path (also the working directory) against the reset emulator."""
    with workspace(emulator, tmp_path, monkeypatch) as space:
        yield space
