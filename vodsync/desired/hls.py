"""HLS playlists named by manifests: which segment files a local `.m3u8` video brings with it.

VOD takes an M3U8 upload as the playlist at `UploadAddress.FileName` plus every segment at
`UploadAddress.ObjectPrefix + name` (vod-api.md §00, as the official uploader does it). So a
playlist item is the playlist and its segments: all confined to the roots like any local file,
all counted in the plan's bytes and in the item's content digest.

Only media playlists of local segments are taken: a segment must be a relative path without
`..`, a scheme, a query or a fragment (its name is also its object key under the prefix); a
master playlist (`#EXT-X-STREAM-INF`) is refused. `#EXT-X-MAP` initialisation sections count
as segments.
"""

from __future__ import annotations

import re

from vodsync.sourcefile import SourceFile

MAX_PLAYLIST_BYTES = 1024 * 1024
_MAP_URI = re.compile(r'#EXT-X-MAP:.*?URI="([^"]*)"')


def is_playlist(path: str) -> bool:
    return path.lower().endswith(".m3u8")


def read_segment_names(path: str) -> list[str]:
    """The segment names of the playlist at `path`, in order, each once. Raises ValueError with
    the reason when the playlist cannot be taken (and OSError-derived errors from opening it)."""
    with SourceFile.open(path) as playlist:
        if playlist.size > MAX_PLAYLIST_BYTES:
            raise ValueError(f"the playlist is larger than {MAX_PLAYLIST_BYTES} bytes")
        data = playlist.read_at(0, playlist.size)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("the playlist is not UTF-8 text") from None
    return segment_names(text)


def segment_names(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("not an HLS playlist (its first line is not #EXTM3U)")
    names: dict[str, None] = {}
    for number, line in enumerate(lines, start=1):
        if line.startswith("#EXT-X-STREAM-INF"):
            raise ValueError("a master playlist; name one of its media playlists instead")
        uri = None
        if line.startswith("#EXT-X-MAP"):
            match = _MAP_URI.match(line)
            uri = match.group(1) if match else None
        elif line and not line.startswith("#"):
            uri = line
        if uri is not None:
            _check_name(uri, number)
            names.setdefault(uri, None)
    if not names:
        raise ValueError("the playlist names no segment")
    return list(names)


def _check_name(uri: str, line: int) -> None:
    if (not uri or "://" in uri or uri.startswith("/") or "\\" in uri or "?" in uri or "#" in uri
            or any(part in ("", ".", "..") for part in uri.split("/"))):
        raise ValueError(
            f"line {line}: segment {uri!r} must be a file beside the playlist or below it "
            "(a relative path without '..', scheme or query): it is uploaded under the video's ObjectPrefix"
        )
