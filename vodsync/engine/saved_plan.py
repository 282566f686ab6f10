"""Saved plans: `vodsync plan -out FILE` writes one, `vodsync apply FILE` carries out exactly it.

A saved plan is a versioned JSON document (`FORMAT`, `FORMAT_VERSION`), written
0600 and holding no secret (what a plan shows, plus the bookkeeping to run it):

    {
      "format": "vodsync-plan", "format_version": 1,
      "vodsync_version": "0.1.0", "created_at": "2026-12-06T23:40:00Z",
      "manifests": "/repo/manifests", "state": "/repo/.vodsync/state.db",
      "digests": {"manifests": "sha256:…", "state": "sha256:…"},
      "options": {"prune": true, "max_delete": 10, "refresh": false, "target": [], "exclude": []},
      "actions": [{"action": "update", "name": "intro", "kind": "video", "reason": "title changed",
                   "fields": ["title"], "upload_bytes": 0, "content_hash": null, "from": null}, …],
      "kept": […],                      # deletions not carried out, and why (shown, never applied)
      "in_sync": 12, "partial": null,
      "plan": {…}                       # the same plan as `vodsync plan --json` prints it, for tools
    }

`apply FILE` does not plan again. It loads the manifests and the state and
refuses (nothing applied) unless both digests are those recorded: the digest of
the manifests covers every item as loaded (its type, source, metadata, options,
protect, import_id, and a local file's size and mtime) and every `moved:`
entry; the digest of the state covers every record. With equal inputs, the
actions rebuilt from the file (each bound to its item and record) are the plan
that was reviewed. A plan made with `--refresh` also depended on what VOD held
then; that is not part of the digests (it is re-read by nothing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vodsync.desired.items import DesiredItem, Kind, ManifestSet, Move
from vodsync.engine.diff import BOOKKEEPING, Action, Change
from vodsync.engine.plan import Plan, plan_json
from vodsync.errors import VodsyncError
from vodsync.state.location import StateLocation
from vodsync.state.store import Record

FORMAT = "vodsync-plan"
FORMAT_VERSION = 1


class SavedPlanError(VodsyncError):
    """The plan file cannot be applied: unreadable, another format, or its inputs changed."""


def manifests_digest(desired: Sequence[DesiredItem], moves: Sequence[Move]) -> str:
    """Digest of the desired set as loaded (all of it, not only targeted items) and the renames."""
    items = [
        [i.name, str(i.kind), i.source, dict(i.metadata), dict(i.options),
         [i.local.size, i.local.mtime_ns] if i.local else None, i.protect, i.import_id]
        for i in sorted(desired, key=lambda i: i.name)
    ]
    return _digest({"items": items, "moves": [[m.old, m.new] for m in moves]})


def state_digest(records: Mapping[str, Record]) -> str:
    """Digest of every record (its write time left out: rewriting a record unchanged changes nothing)."""
    rows = []
    for name in sorted(records):
        row = dataclasses.asdict(records[name])
        row.pop("updated_at", None)
        rows.append(row)
    return _digest(rows)


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Inputs:
    """What a plan was made from, as `apply FILE` compares it."""

    manifests: Path
    state: StateLocation
    manifests_digest: str
    state_digest: str


def inputs_of(manifests: Path, state: StateLocation, loaded: ManifestSet, records: Mapping[str, Record]) -> Inputs:
    return Inputs(manifests, state, manifests_digest(loaded.items, loaded.moves), state_digest(records))


def _change_json(c: Change) -> dict[str, Any]:
    return {
        "action": str(c.action), "name": c.name, "kind": str(c.kind), "reason": c.reason,
        "fields": list(c.fields), "upload_bytes": c.upload_bytes, "content_hash": c.content_hash,
        "from": c.record.name if c.action is Action.MOVE and c.record is not None else None,
    }


def write_plan(path: Path, plan: Plan, inputs: Inputs, options: Mapping[str, Any], version: str) -> None:
    """Write `plan` to `path` (0600), atomically: a reader sees the old file or the whole new one."""
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vodsync_version": version,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "manifests": str(inputs.manifests.resolve()),
        "state": str(inputs.state.path.resolve()) if inputs.state.path else str(inputs.state),
        "digests": {"manifests": inputs.manifests_digest, "state": inputs.state_digest},
        "options": dict(options),
        "actions": [_change_json(c) for c in plan.actions],
        "kept": [_change_json(c) for c in plan.kept],
        "in_sync": plan.in_sync,
        "partial": plan.partial,
        "plan": plan_json(plan),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise SavedPlanError(f"cannot write the plan to {path}: {exc.strerror or exc}") from None


def read_plan(path: Path) -> dict[str, Any]:
    """The document in `path`, checked to be a saved plan of a format this version reads."""
    try:
        doc = json.loads(path.read_text())
    except OSError as err:
        raise SavedPlanError(f"cannot read the plan file {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise SavedPlanError(f"{path} is not a vodsync plan file (not JSON: {err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SavedPlanError(f"{path} is not a vodsync plan file (write one with `vodsync plan -out FILE`)")
    if doc.get("format_version") != FORMAT_VERSION:
        raise SavedPlanError(
            f"{path} is a plan of format version {doc.get('format_version')!r}; this vodsync reads "
            f"version {FORMAT_VERSION}. Make the plan again with this version."
        )
    return doc


def check_inputs(doc: Mapping[str, Any], path: Path, inputs: Inputs) -> None:
    """Refuse the plan unless the manifests and the state are what it was made from."""
    changed = []
    digests = doc.get("digests") or {}
    if digests.get("manifests") != inputs.manifests_digest:
        changed.append(f"the manifests ({inputs.manifests}) changed")
    if digests.get("state") != inputs.state_digest:
        changed.append(f"the state ({inputs.state}) changed")
    if changed:
        raise SavedPlanError(
            f"refusing to apply {path}: {' and '.join(changed)} since the plan was made "
            f"({doc.get('created_at', 'at an unknown time')}); nothing was applied. "
            "Make a new plan (`vodsync plan -out FILE`) and review it."
        )


def rebuild_plan(
    doc: Mapping[str, Any], desired: Sequence[DesiredItem], records: Mapping[str, Record]
) -> Plan:
    """The plan the file describes, each action bound to its item and record (inputs already checked)."""
    by_name = {i.name: i for i in desired}

    def change(row: Mapping[str, Any]) -> Change:
        action = Action(row["action"])
        record = records.get(row["from"] if action is Action.MOVE else row["name"])
        return Change(
            action, row["name"], Kind(row["kind"]), row["reason"], tuple(row.get("fields") or ()),
            item=by_name.get(row["name"]), record=record, upload_bytes=int(row.get("upload_bytes") or 0),
            content_hash=row.get("content_hash"),
        )

    try:
        actions = tuple(change(r) for r in doc["actions"])
        kept = tuple(change(r) for r in doc.get("kept") or ())
    except (KeyError, TypeError, ValueError) as err:
        raise SavedPlanError(f"the plan file is damaged ({type(err).__name__}: {err})") from None
    counts = Counter(str(c.action) for c in actions if c.action not in BOOKKEEPING)
    return Plan(actions=actions, kept=kept, in_sync=int(doc.get("in_sync") or 0), counts=dict(counts),
                partial=doc.get("partial"))
