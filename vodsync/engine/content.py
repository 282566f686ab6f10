"""Which local files to hash for a plan: only those whose size or mtime moved (`vodsync.checksum`).

This is the one place the engine reads file bytes for planning. Digests are
cached in the state file keyed by (path, size, mtime_ns), so an unchanged
library is never re-read, and a file touched by `git checkout` is read once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from vodsync.checksum import files_digest
from vodsync.desired.items import DesiredItem, LocalFile
from vodsync.engine.diff import needs_hash
from vodsync.state.store import Record


def hashes_needed(
    desired: Sequence[DesiredItem],
    records: Mapping[str, Record],
    *,
    cached: Callable[[str, int, int], str | None],
    remember: Callable[[str, int, int, str], None] | None = None,
    hash_file: Callable[[LocalFile], str] | None = None,
    threads: int = 4,
) -> dict[str, str]:
    """Digests of the items whose stat moved since they were recorded, by item name."""
    hash_file = hash_file or local_digest
    todo = [i for i in desired if needs_hash(i, records.get(i.name))]
    out: dict[str, str] = {}
    missing: list[DesiredItem] = []
    for item in todo:
        assert item.local is not None
        digest = cached(item.local.path, item.local.total_size, item.local.newest_mtime_ns)
        if digest:
            out[item.name] = digest
        else:
            missing.append(item)
    if missing:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for item, digest in zip(missing, pool.map(lambda i: hash_file(i.local), missing), strict=True):
                out[item.name] = digest
                if remember is not None:
                    assert item.local is not None
                    remember(item.local.path, item.local.total_size, item.local.newest_mtime_ns, digest)
    return out


def local_digest(local: LocalFile) -> str:
    """The content identity of a local item: its file's CRC-64, continued over its HLS segments."""
    return files_digest([local.path, *(s.file.path for s in local.segments)])
