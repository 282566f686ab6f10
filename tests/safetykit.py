"""Helpers for the safety tests (crash, faults, security, delete safety, gc).

`Library` lays out a repository (a `.git` marker, `manifests/`, `media/`) holding
items of all five kinds: local videos (some large enough to go multipart),
images, attached media, URL items served by a loopback `SourceServer`, and
register items whose objects are put in a bucket with the account key (FileURLs
in the emulator's own form `http://127.0.0.1:PORT/BUCKET/KEY`).

`Library.cli()` runs `vodsync.cli.main` in-process with stdout/stderr captured;
`Library.spawn()` starts `vodsync` as a real process (for SIGKILL tests).
`census()` reads the emulator and the state file and says, per item, how many
media exist, what is left in `Uploading` and which media no record owns.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from clirun import ACCOUNT_ENV, Run, run_cli
from sources import SourceServer

from vodsync.emulator import Emulator

SEED_BUCKET = "customer-media"
VODSYNC = str(Path(sys.executable).with_name("vodsync"))
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


def mp4(size: int, fill: bytes = b"v") -> bytes:
    head = b"\x00\x00\x00\x18ftypmp42"
    return (head + fill * max(size - len(head), 0))[:max(size, len(head))]


def png(seed: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + bytes([seed % 256]) * 300


def vtt(seed: int) -> bytes:
    return f"WEBVTT\n\n00:00.000 --> 00:01.000\nline {seed}\n".encode()


# Calls that change something: what a no-op or refused run must not make.
WRITES = ("Create", "Upload", "Register", "Delete", "Update", "Refresh", "Cancel", "oss:PUT", "oss:POST",
          "oss:DELETE")


def writes(emulator: Emulator) -> dict[str, int]:
    return {k: v for k, v in emulator.calls().items() if k.startswith(WRITES)}


@dataclass
class Library:
    """A repository of manifests and media, pointed at one emulator."""

    root: Path
    emulator: Emulator
    sources: SourceServer
    items: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.repo = self.root / "repo"
        (self.repo / ".git").mkdir(parents=True, exist_ok=True)
        self.manifests = self.repo / "manifests"
        self.manifests.mkdir(exist_ok=True)
        self.state = self.root / "state" / "state.db"

    # ---- the desired state

    def file(self, rel: str, data: bytes) -> str:
        path = self.manifests / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return rel

    def seed_object(self, key: str, data: bytes, bucket: str = SEED_BUCKET) -> str:
        import oss2

        self.emulator.oss.ensure_bucket(bucket)
        account = oss2.Auth(self.emulator.access_key_id, self.emulator.access_key_secret)
        oss2.Bucket(account, self.emulator.url, bucket).put_object(key, data)
        return f"{self.emulator.url}/{bucket}/{key}"

    def mixed(self, *, videos: int = 6, big: int = 0, big_size: int = 1536 * 1024, images: int = 6,
              attached: int = 6, urls: int = 6, registers: int = 6) -> list[dict[str, Any]]:
        """Items of all five kinds. Titles deliberately contain one another ("Still 1" is in
        "Still 10"), because VOD's title search is a substring match."""
        items: list[dict[str, Any]] = []
        for i in range(videos):
            size = big_size + i * 1000 if i < big else 3000 + i * 37
            items.append({"name": f"video-{i:02d}", "type": "video", "title": f"Clip {i}",
                          "file": self.file(f"media/clip{i}.mp4", mp4(size, bytes([65 + i % 26]))),
                          "tags": ["crash", f"v{i}"]})
        for i in range(images):
            items.append({"name": f"image-{i:02d}", "type": "image", "title": f"Still {i}",
                          "file": self.file(f"media/still{i}.png", png(i))})
        for i in range(attached):
            items.append({"name": f"subs-{i:02d}", "type": "attached", "title": f"Subtitles {i}",
                          "business_type": "subtitle", "file": self.file(f"media/subs{i}.vtt", vtt(i))})
        for i in range(urls):
            url = self.sources.add(f"/src/remote{i}.mp4", mp4(2000 + i, b"u"))
            items.append({"name": f"remote-{i:02d}", "type": "url", "title": f"Remote {i}", "url": url})
        for i in range(registers):
            file_url = self.seed_object(f"archive/ep{i}.mp4", mp4(1500 + i, b"r"))
            items.append({"name": f"archive-{i:02d}", "type": "register", "title": f"Archive {i}",
                          "file_url": file_url})
        return items

    def write(self, items: list[dict[str, Any]], *, per_file: int = 12) -> None:
        """Spread the items over several manifest files (the loader merges them)."""
        for old in self.manifests.glob("*.yaml"):
            old.unlink()
        self.items = list(items)
        for n, start in enumerate(range(0, len(items), per_file)):
            doc = {"media": items[start:start + per_file]}
            (self.manifests / f"part{n}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    # ---- running vodsync

    def argv(self, command: str, *extra: str) -> list[str]:
        args = [command]
        if command in ("plan", "apply", "validate"):
            args += ["-f", str(self.manifests)]
        if command in ("plan", "apply", "status", "gc"):
            args += ["--state", str(self.state)]
        if command in ("plan", "apply", "gc"):
            args += ["--endpoint", self.emulator.url]
        if command == "apply":
            args += ["--yes"]
        return args + list(extra)

    def cli(self, command: str, *extra: str, env: dict[str, str] | None = None) -> Run:
        """`vodsync COMMAND ...` in-process, stdout and stderr captured."""
        return run_cli(self.argv(command, *extra), env)

    def spawn(self, command: str, *extra: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        """`vodsync COMMAND ...` as a real process (so it can be killed with SIGKILL)."""
        env = {k: v for k, v in os.environ.items() if k not in PROXIES}
        env.update(ACCOUNT_ENV)
        sink = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed by the caller's wait
        return subprocess.Popen([VODSYNC, *self.argv(command, *extra)], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def records(self) -> dict[str, Any]:
        from vodsync.state.store import StateStore

        with StateStore.open(self.state, readonly=True) as store:
            return store.records()


@dataclass
class Census:
    per_item: dict[str, int]  # item name -> media carrying its title (exactly, by kind)
    uploading: list[str]  # media ids still in Uploading
    unowned: list[str]  # media ids no record owns
    missing: list[str]  # records whose remote_id the emulator does not hold
    unfinished: dict[str, str]  # item -> record status, for records not READY/PROCESSING


def census(emulator: Emulator, records: dict[str, Any], items: list[dict[str, Any]],
           *, ignore: set[str] = frozenset()) -> Census:
    """What the account holds against one state's records; media in `ignore` (another state's) are left out."""
    state = emulator.state()
    titles: Counter[tuple[str, str]] = Counter()
    all_ids: dict[str, str] = {}
    uploading = []
    for group, id_key in (("videos", "VideoId"), ("images", "ImageId"), ("attached", "MediaId")):
        for m in state[group]:
            if m[id_key] in ignore:
                continue
            titles[(group, m["Title"])] += 1
            all_ids[m[id_key]] = group
            if m["Status"] == "Uploading":
                uploading.append(m[id_key])
    group_of = {"video": "videos", "url": "videos", "register": "videos", "image": "images", "attached": "attached"}
    per_item = {i["name"]: titles[(group_of[i["type"]], i["title"])] for i in items}
    owned = {r.remote_id for r in records.values() if r.remote_id}
    unowned = sorted(set(all_ids) - owned)
    missing = sorted(r.name for r in records.values() if r.remote_id and r.remote_id not in all_ids)
    unfinished = {r.name: str(r.status) for r in records.values()
                  if str(r.status) not in ("ready", "processing") or not r.remote_id}
    return Census(per_item, uploading, unowned, missing, unfinished)
