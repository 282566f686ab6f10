"""A local file opened once for upload: checked to be the file that was planned, then read only through that descriptor.

A drop folder is written by other people, and a manifest may come from an untrusted pull
request. Between the moment a file is planned (confined to the roots, stat-ed, hashed) and
the moment its bytes go to OSS, someone who can write its directory can rename a symlink to
a secret over it, or a FIFO, or `/dev/zero`. Opening by path again at each read (for the
checksum, for every part) would follow whatever is there by then. So a file is opened once:

- with `O_NOFOLLOW` (a symlink in its place is refused, never followed) and `O_NONBLOCK` (a
  FIFO swapped in cannot block the open: it is refused at the next check);
- `fstat` must show a regular file, and the very file planned: the same device and inode
  (which also catches a directory of its path swapped for a symlink to elsewhere: that
  leads to another inode), size and mtime;
- then its CRC-64 and every part are read from that descriptor with `os.pread` (parallel
  parts share it safely), never more than the planned size, and a file that shrinks under
  the reader is an error, not a short or endless read.

Anything else raises `LocalFileRefused` naming the file and what was wrong.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from vodsync.checksum import SAFE_READ_FLAGS, crc64_of_descriptor
from vodsync.errors import LocalFileRefused


@dataclass(frozen=True, slots=True)
class Planned:
    """What a file was when it was planned; `dev`/`ino` 0 when they were not recorded."""

    size: int
    mtime_ns: int
    dev: int = 0
    ino: int = 0


class SourceFile:
    """One checked, read-only descriptor of a local file; `os.fspath()` gives its path (for names
    and checkpoint keys only: nothing reads through the path again)."""

    def __init__(self, path: str, fd: int, info: os.stat_result) -> None:
        self.path = path
        self._fd: int | None = fd
        self._info = info
        self.size = info.st_size
        self.mtime_ns = info.st_mtime_ns
        self.mtime = info.st_mtime  # what oss2's checkpoints record (`os.path.getmtime`)
        self._identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)

    @classmethod
    def open(cls, path: str | os.PathLike[str], planned: Planned | None = None) -> SourceFile:
        """Open `path` once and check it; without `planned`, whatever regular file is there now."""
        path = os.fspath(path)
        try:
            fd = os.open(path, SAFE_READ_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LocalFileRefused(f"{path} is now a symbolic link; vodsync does not follow it") from None
            raise LocalFileRefused(f"cannot open {path}: {exc.strerror or exc}") from None
        try:
            info = os.fstat(fd)
            _check(path, info, planned)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, info)

    def dup(self) -> SourceFile:
        """Another descriptor of the same open file (for a reader that may outlive this one's `close`)."""
        return SourceFile(self.path, os.dup(self.fd), self._info)

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        return self._fd

    def read_at(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset` (clipped to the planned size); a shorter file is an error."""
        length = max(0, min(length, self.size - offset))
        chunks: list[bytes] = []
        while length > 0:
            chunk = os.pread(self.fd, length, offset)
            if not chunk:
                raise LocalFileRefused(f"{self.path} shrank while being read (was {self.size} bytes)")
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def crc64(self, initial: int = 0) -> int:
        """CRC-64/XZ of the planned size's bytes, read from the descriptor (continuing `initial`);
        then the file must be unchanged."""
        try:
            crc = crc64_of_descriptor(self.fd, self.size, initial=initial)
        except EOFError:
            raise LocalFileRefused(f"{self.path} shrank while being read (was {self.size} bytes)") from None
        self.check_unchanged()
        return crc

    def check_unchanged(self) -> None:
        info = os.fstat(self.fd)
        if (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns) != self._identity:
            raise LocalFileRefused(f"{self.path} changed while being read; run again to upload its new content")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __fspath__(self) -> str:
        return self.path

    def __enter__(self) -> SourceFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SourceFile({self.path!r}, size={self.size})"


def _check(path: str, info: os.stat_result, planned: Planned | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise LocalFileRefused(f"{path} is not a regular file any more; vodsync uploads regular files only")
    if planned is None:
        return
    if planned.ino and (info.st_dev, info.st_ino) != (planned.dev, planned.ino):
        raise LocalFileRefused(
            f"{path} is not the file that was planned: it was replaced (or a directory on its path was); "
            "run again to plan what is there now"
        )
    if (info.st_size, info.st_mtime_ns) != (planned.size, planned.mtime_ns):
        raise LocalFileRefused(f"{path} changed since it was planned; run again to upload its new content")
