"""Changes -> an ordered plan, what each change sets (old -> new), and the plan's JSON form. Pure.
(`ui.py` renders the text.)

The plan is where delete policy lives: deletions are carried out only when the
user asked (`prune`), never for protected items, never when the desired set is
empty, and never beyond `max_delete`. Deletions that are not carried out stay
visible as `kept` so nobody is surprised later.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vodsync.desired.items import Kind
from vodsync.engine.diff import BOOKKEEPING, Action, Change, deletes_users_source
from vodsync.errors import DeleteRefused, ManifestError, VodsyncError, display_path

DEFAULT_MAX_DELETE = 10
REGISTERED_SOURCE_KEPT = (
    "deleting a registered item's media also deletes its OSS object, your source file; to delete both, "
    "give the item on_delete: delete-source, apply, then remove it"
)

# Creates first (new media is usable soonest), deletes last (a failure earlier stops nothing).
_ORDER = {
    Action.MOVE: -2,  # state only, before anything that reads the re-keyed records
    Action.IMPORT: -1,
    Action.RESUME: 0,
    Action.CREATE: 1,
    Action.REPLACE: 2,
    Action.UPDATE: 3,
    Action.FOLLOW: 4,
    Action.TOUCH: 5,
    Action.DELETE: 6,
}


@dataclass(frozen=True)
class PlanOptions:
    prune: bool = False
    max_delete: int | None = DEFAULT_MAX_DELETE


@dataclass(frozen=True)
class Plan:
    actions: tuple[Change, ...]  # what apply will do, in order (bookkeeping included)
    kept: tuple[Change, ...] = ()  # deletions not carried out, and why
    in_sync: int = 0  # desired items that need nothing
    refusal: str | None = None  # set when policy stopped the run; nothing is applied then
    counts: dict[str, int] = field(default_factory=dict)
    partial: str | None = None  # --target/--exclude: which items this plan covers (`engine/targets.py`)
    processing: int = 0  # in-sync items VOD is still ingesting or transcoding: apply follows them

    @property
    def changes(self) -> tuple[Change, ...]:
        """Actions that touch VOD (bookkeeping left out)."""
        return tuple(c for c in self.actions if c.action not in BOOKKEEPING)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    @property
    def uncleared(self) -> tuple[Change, ...]:
        """Actions whose manifest empties a field the API cannot clear (it is left as it is)."""
        return tuple(c for c in self.actions if c.uncleared)

    @property
    def upload_bytes(self) -> int:
        return sum(c.upload_bytes for c in self.changes)

    def __iter__(self):  # noqa: ANN204 - iterate the changes, as tests assert plans as lists of strings
        return iter(self.changes)


def make_plan(
    changes: Sequence[Change],
    options: PlanOptions,
    *,
    desired_count: int,
    partial: str | None = None,
    manifests_count: int | None = None,
    refusal: str | None = None,
) -> Plan:
    """Apply delete policy and order the changes. Never raises: a refusal is part of the plan.

    A partial plan (`partial`) covers `desired_count` targeted items of the `manifests_count`
    the manifests describe; `refusal` is a refusal found before (a `moved:` conflict)."""
    actions: list[Change] = []
    kept: list[Change] = []
    deletes: list[Change] = []
    for c in changes:
        if c.action is not Action.DELETE:
            actions.append(c)
        elif c.record is not None and c.record.protect:
            kept.append(c)
        elif c.record is not None and deletes_users_source(c.record):
            kept.append(_with_reason(c, f"{c.reason} (not deleted: {REGISTERED_SOURCE_KEPT})"))
        elif not options.prune:
            kept.append(_with_reason(c, f"{c.reason} (kept; run with --prune to delete)"))
        else:
            deletes.append(c)

    described = desired_count if manifests_count is None else manifests_count
    if deletes and described == 0:
        refusal = (
            f"refusing to delete {len(deletes)} item(s): the manifests describe no media at all "
            "(is -f pointing at the right directory?)"
        )
    elif deletes and options.max_delete is not None and len(deletes) > options.max_delete:
        refusal = (
            f"refusing to delete {len(deletes)} items, more than --max-delete {options.max_delete}; "
            f"nothing was changed. Re-run with --max-delete {len(deletes)} if that is intended."
        )
    if refusal and deletes:
        why = "the manifests describe no media" if described == 0 else "over the limit"
        kept.extend(_with_reason(c, f"{c.reason} (not deleted: {why})") for c in deletes)
    else:
        actions.extend(deletes)

    actions.sort(key=lambda c: (_ORDER[c.action], c.name))
    kept.sort(key=lambda c: c.name)
    counts = Counter(str(c.action) for c in actions if c.action not in BOOKKEEPING)
    touched = {c.name for c in changes if c.action is not Action.DELETE}
    return Plan(
        actions=tuple(actions),
        kept=tuple(kept),
        in_sync=max(desired_count - len(touched), 0)
        + sum(1 for c in actions if c.action in BOOKKEEPING),
        refusal=refusal,
        counts=dict(counts),
        partial=partial,
    )


def check_plan(plan: Plan) -> None:
    """Raise when policy refused the run, so nothing at all is applied."""
    if plan.refusal:
        raise DeleteRefused(plan.refusal)


def _with_reason(c: Change, reason: str) -> Change:
    return dataclasses.replace(c, reason=reason)


# ------------------------------------------------------ what a plan shows (ui.py renders it)

PLAN_FORMAT_VERSION = 1  # of `plan --json`; raised when a key changes meaning or goes away

_SOURCE_KEY = {Kind.VIDEO: "file", Kind.IMAGE: "file", Kind.ATTACHED: "file", Kind.URL: "url",
               Kind.REGISTER: "file_url"}


@dataclass(frozen=True)
class FieldChange:
    """One attribute a change sets: `before` is None for a create (or a field not set before)."""

    field: str
    before: Any
    after: Any


def creates_media(c: Change) -> bool:
    """A create, or a resume of an item whose media was never created: every attribute is new."""
    return c.action is Action.CREATE or (
        c.action is Action.RESUME and (c.record is None or not (c.record.remote_id or c.record.job_id)))


def field_changes(c: Change) -> tuple[FieldChange, ...]:
    """What the change sets, old -> new: every field an update or replace writes; every attribute of a
    create (the source, metadata and creation options); a delete's last known metadata -> None."""
    if c.action is Action.DELETE:
        return tuple(FieldChange(f, _plain(v), None) for f, v in (c.record.metadata if c.record else {}).items())
    item = c.item
    if item is None:
        return ()
    if creates_media(c):
        source = display_path(item.source) if item.kind.uploads_local_file else item.source
        attrs = {_SOURCE_KEY[item.kind]: source, **item.metadata, **item.options}
        return tuple(FieldChange(f, None, _plain(v)) for f, v in attrs.items() if v is not None)
    current = c.current if c.current is not None else (c.record.metadata if c.record else {})
    out = [FieldChange(f, _plain(current.get(f)), _plain(item.metadata.get(f))) for f in c.fields]
    if c.action is Action.REPLACE and c.record is not None and c.record.source != item.source:
        key, show = _SOURCE_KEY[item.kind], (display_path if item.kind.uploads_local_file else str)
        out.insert(0, FieldChange(key, show(c.record.source) if c.record.source else None, show(item.source)))
    return tuple(out)


def _plain(value: Any) -> Any:
    """JSON-ready: tags are lists."""
    return list(value) if isinstance(value, tuple) else value


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def uncleared_text(c: Change) -> str:
    fields = ", ".join(c.uncleared)
    return f"{fields} cannot be cleared: the VOD API documents no way to empty a field; left as it is"


def change_json(c: Change) -> dict[str, Any]:
    out: dict[str, Any] = {
        "action": str(c.action),
        "name": c.name,
        "kind": str(c.kind),
        "reason": c.reason,
    }
    if c.fields:
        out["fields"] = list(c.fields)
    if c.uncleared:
        out["uncleared"] = list(c.uncleared)
    if c.upload_bytes:
        out["upload_bytes"] = c.upload_bytes
    if c.record is not None and c.record.remote_id:
        out["remote_id"] = c.record.remote_id
    changes = field_changes(c)
    if changes:
        out["before"] = None if creates_media(c) else {f.field: f.before for f in changes}
        out["after"] = None if c.action is Action.DELETE else {f.field: f.after for f in changes}
    return out


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "format_version": PLAN_FORMAT_VERSION,
        "changes": [change_json(c) for c in plan.changes],
        "kept": [change_json(c) for c in plan.kept],
        "summary": {
            **{a: plan.counts.get(a, 0) for a in (
                "create", "update", "replace", "delete", "resume", "follow", "import", "move")},
            "in_sync": plan.in_sync,
            "processing": plan.processing,
            "upload_bytes": plan.upload_bytes,
            "has_changes": plan.has_changes,
        },
        "refusal": plan.refusal,
        "notes": [{"name": c.name, "fields": list(c.uncleared), "note": uncleared_text(c)} for c in plan.uncleared],
        "partial": plan.partial,
    }


def error_json(err: VodsyncError) -> dict[str, Any]:
    """What `plan --json` prints instead of a plan when there is none: an invalid manifest names each
    problem's file, line and field."""
    error: dict[str, Any] = {"message": err.message}
    if isinstance(err, ManifestError):
        error["message"] = f"invalid manifests ({len(err.problems)} problem(s))"
        error["problems"] = [
            {"file": p.location.file, "line": p.location.line, "field": p.field, "message": p.message}
            for p in err.problems
        ]
    return {"format_version": PLAN_FORMAT_VERSION, "error": error}
