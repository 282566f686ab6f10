"""What one state owns on a VOD account, and how its media is told from everyone else's.

The one place for these rules; crash recovery (`recovery.py`) and `vodsync gc` (`gc.py`)
both use them.

**Namespace.** ReferenceIds are unique per *account*, and one account may serve several
states (two repositories, two teams). Every state therefore has a namespace, recorded in
its meta table (`state_namespace`): random for a new state, pinned by the config's
`namespace:` key if given. The ReferenceId of an item's video and the marker written in
the UserData of everything vodsync creates are derived from namespace + name, so two
states with an item `intro` make two videos, and media whose marker names another
namespace is never adopted, deleted or collected. A state written before namespaces
existed records `LEGACY` and keeps the name-only scheme (`execution.reference_id`,
`execution.user_data`), so its recorded ReferenceIds and markers stay valid.

**What a state owns:** the media each record serves (`remote_id`) and the media a replace
keeps serving until its successor is complete (`intent.supersedes`).

**Finding media the way the service allows.** SearchMedia neither searches nor returns
ReferenceId or UserData, and returns only ID, creation time and type unless `Fields` is
given (vod-api.md §00). So candidates are searched by title and/or creation-time window
(or `Status in ('Uploading')`) with explicit `Fields`, and "is this ours" is decided from
the UserData read back with GetVideoInfos / GetImageInfo / GetAttachedMediaInfo.
Videos are also found directly by ReferenceId (GetVideoInfos by ReferenceIds).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from vodsync.cloud.types import SEARCH_FIELDS, Hit
from vodsync.desired.items import Kind
from vodsync.engine.execution import VIDEO_BATCH, chunks
from vodsync.errors import ConfigError
from vodsync.state.interface import Store
from vodsync.state.store import Record

if TYPE_CHECKING:
    from vodsync.cloud.types import RemoteMedia
    from vodsync.cloud.vod import VodClient

NAMESPACE_KEY = "namespace"  # in the state file's meta table
LEGACY = "legacy"  # the name-only scheme of states written before namespaces
_MARKER_KEY, _NS_KEY = "vodsync", "ns"

# SearchMedia: which search types hold a kind's media.
_SEARCH_TYPES = {Kind.VIDEO: ("video", "audio"), Kind.IMAGE: ("image",), Kind.ATTACHED: ("attached",)}


def reference_id(name: str) -> str:
    """The legacy (name-only) ReferenceId of an item's video: stable, `[A-Za-z0-9_-]`, within 6-64 chars."""
    return "vs_" + hashlib.sha1(name.encode()).hexdigest()


def user_data(name: str) -> str:
    """The legacy marker on everything vodsync creates, so `vodsync gc` can tell our media from others'."""
    return json.dumps({"Extend": {"vodsync": name}}, separators=(",", ":"))


@dataclass(frozen=True)
class Namespace:
    """The namespace of one state: the ReferenceIds and markers of its media derive from it."""

    value: str

    @property
    def legacy(self) -> bool:
        return self.value == LEGACY

    def reference_id(self, name: str) -> str:
        """The ReferenceId of item `name`'s video: stable, `[A-Za-z0-9_-]`, 43 chars."""
        if self.legacy:
            return reference_id(name)
        return "vs_" + hashlib.sha1(f"{self.value}\n{name}".encode()).hexdigest()

    def user_data(self, name: str) -> str:
        """The UserData marker on everything this state creates for item `name`."""
        if self.legacy:
            return user_data(name)
        return json.dumps({"Extend": {_MARKER_KEY: name, _NS_KEY: self.value}}, separators=(",", ":"))

    def owns(self, raw_user_data: Any, name: str | None = None) -> bool:
        """True when the UserData is this namespace's marker (for item `name`, if given)."""
        marker = marker_of(raw_user_data)
        return marker is not None and marker.namespace == self.value and (name is None or marker.name == name)


@dataclass(frozen=True)
class Marker:
    name: str
    namespace: str


def marker_of(raw: Any) -> Marker | None:
    """The marker in UserData `{"Extend": {"vodsync": name[, "ns": namespace]}}`, else None."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
        extend = data.get("Extend") if isinstance(data, Mapping) else None
        if isinstance(extend, str):
            extend = json.loads(extend)
        if not isinstance(extend, Mapping):
            return None
        name, namespace = extend.get(_MARKER_KEY), extend.get(_NS_KEY, LEGACY)
        if isinstance(name, str) and isinstance(namespace, str):
            return Marker(name, namespace)
    except ValueError:
        pass
    return None


def state_namespace(store: Store, pinned: str | None = None) -> Namespace:
    """The state's namespace, recorded on first use: `pinned` (the config's `namespace:`), else
    LEGACY for a state that already has records (they were made with the name-only scheme),
    else a new random one. A recorded namespace other than `pinned` is an error."""
    recorded = store.get_meta(NAMESPACE_KEY)
    if recorded is not None:
        if pinned is not None and pinned != recorded:
            raise ConfigError(f"state file {store.location} belongs to namespace {recorded!r}, but the config "
                              f"pins namespace {pinned!r}; use that state's namespace or another state file")
        return Namespace(recorded)
    if pinned is not None:
        value = pinned
    elif store.records():
        value = LEGACY
    else:
        value = secrets.token_hex(8)
    if not store.readonly:
        store.set_meta(NAMESPACE_KEY, value)
    return Namespace(value)


def recorded_namespace(store: Store) -> Namespace:
    """The namespace the state's records were made in, without recording one (for plans): the
    recorded namespace, else the name-only scheme (a state with records and no namespace is of
    that scheme; one with no records holds no ReferenceId for the difference to matter)."""
    recorded = store.get_meta(NAMESPACE_KEY)
    return Namespace(recorded if recorded is not None else LEGACY)


def owned_media(records: Mapping[str, Record]) -> set[str]:
    """Media the state owns: what each record serves, and what a replace keeps serving."""
    owned: set[str] = set()
    for r in records.values():
        if r.remote_id:
            owned.add(r.remote_id)
        if r.intent is not None and r.intent.supersedes is not None:
            owned.add(r.intent.supersedes.media_id)
    return owned


# ------------------------------------------------------------------ the service's side


def search(
    client: VodClient,
    kind: Kind,
    *,
    title: str | None = None,
    since: float | None = None,
    until: float | None = None,
    uploading: bool = False,
) -> list[Hit]:
    """Media of `kind` whose title contains `title` (VOD's title search is fuzzy: filter exactly
    after), created within [since, until], and (with `uploading`) still in `Uploading`."""
    clauses = []
    if title is not None:
        clauses.append(f"Title = '{_quote(title)}'")
    if uploading:
        clauses.append("Status in ('Uploading')")
    if since is not None or until is not None:
        clauses.append(f"CreationTime = ('{_iso(since or 0)}','{_iso(until or 4102444800)}')")
    hits = []
    for search_type in _SEARCH_TYPES[_media_kind(kind)]:
        hits.extend(client.search_media(search_type, " and ".join(clauses), fields=SEARCH_FIELDS))
    return hits


def read_media(client: VodClient, kind: Kind, ids: Sequence[str]) -> dict[str, RemoteMedia]:
    """The media (with its UserData) of each id that still exists, read in batches where the API
    has a batch read (videos, attached media: 20 at a time; images one by one)."""
    out: dict[str, RemoteMedia] = {}
    kind = _media_kind(kind)
    if kind is Kind.IMAGE:
        for mid in ids:
            media = client.get_image_info(mid)
            if media is not None:
                out[mid] = media
        return out
    read = client.get_video_infos if kind is Kind.VIDEO else client.get_attached_media_infos
    for batch in chunks(list(ids), VIDEO_BATCH):
        found, _ = read(batch)
        out.update(found)
    return out


def find_marked(
    client: VodClient, kind: Kind, namespace: Namespace, hits: Iterable[Hit], *, name: str | None = None
) -> list[RemoteMedia]:
    """Of the search hits, the media whose UserData is `namespace`'s marker (for `name`, if given)."""
    media = read_media(client, kind, [h.media_id for h in hits])
    return [m for m in media.values() if namespace.owns(m.user_data, name)]


def delete_media(client: VodClient, kind: Kind, ids: Sequence[str]) -> None:
    """Delete media of one kind, 20 per call."""
    kind = _media_kind(kind)
    for batch in chunks([i for i in ids if i], VIDEO_BATCH):
        if kind is Kind.VIDEO:
            client.delete_videos(batch)
        elif kind is Kind.IMAGE:
            client.delete_images(batch)
        else:
            client.delete_attached_media(batch)


def _media_kind(kind: Kind) -> Kind:
    """The kind of media a kind of item makes: URL ingests and registrations make videos."""
    return Kind.VIDEO if kind.remote_is_video else kind


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(max(0.0, epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")
