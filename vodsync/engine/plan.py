"""Changes -> an ordered plan, and the plan's text and JSON forms. Pure.

The plan is where delete policy lives: deletions are carried out only when the
user asked (`prune`), never for protected items, never when the desired set is
empty, and never beyond `max_delete`. Deletions that are not carried out stay
visible as `kept` so nobody is surprised later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vodsync.engine.diff import BOOKKEEPING, Action, Change
from vodsync.errors import DeleteRefused

DEFAULT_MAX_DELETE = 10

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

    @property
    def changes(self) -> tuple[Change, ...]:
        """Actions that touch VOD (bookkeeping left out)."""
        return tuple(c for c in self.actions if c.action not in BOOKKEEPING)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

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
    return Change(c.action, c.name, c.kind, reason, c.fields, c.item, c.record, c.upload_bytes, c.content_hash)


# ---------------------------------------------------------------- rendering

_SYMBOL = {
    Action.CREATE: ("+", "green"),
    Action.UPDATE: ("~", "yellow"),
    Action.REPLACE: ("±", "magenta"),
    Action.DELETE: ("-", "red"),
    Action.RESUME: (">", "cyan"),
    Action.FOLLOW: ("…", "blue"),
    Action.IMPORT: ("<", "cyan"),
    Action.MOVE: ("→", "cyan"),
}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def summary_line(plan: Plan) -> str:
    if plan.refusal:
        return f"Plan refused: {plan.refusal}"
    if not plan.has_changes:
        kept = f"; {len(plan.kept)} kept (not in manifests)" if plan.kept else ""
        return f"No changes. {plan.in_sync} item(s) in sync{kept}."
    order = ("create", "update", "replace", "delete", "resume", "follow", "import", "move")
    parts = [f"{plan.counts.get(a, 0)} to {a}" for a in order if plan.counts.get(a) or a in order[:4]]
    upload = f"; {human_bytes(plan.upload_bytes)} to upload" if plan.upload_bytes else ""
    return f"Plan: {', '.join(parts)}{upload}."


def render_lines(plan: Plan) -> list[tuple[str, str]]:
    """(text, style) per line of the human form; styles are rich style names."""
    rows = list(plan.changes)
    width = max((len(c.name) for c in [*rows, *plan.kept]), default=4)
    lines: list[tuple[str, str]] = []
    for c in rows:
        sym, style = _SYMBOL[c.action]
        extra = f"  ({human_bytes(c.upload_bytes)} to upload)" if c.upload_bytes else ""
        fields = f" [{', '.join(c.fields)}]" if c.fields and c.action is not Action.UPDATE else ""
        lines.append((f"  {sym} {c.action:<8} {c.name:<{width}}  {c.kind:<8}  {c.reason}{fields}{extra}", style))
    for c in plan.kept:
        lines.append((f"    {'kept':<8} {c.name:<{width}}  {c.kind:<8}  {c.reason}", "dim"))
    if lines:
        lines.append(("", ""))
    if plan.partial:
        lines.append((f"Partial plan: {plan.partial}.", "yellow"))
    lines.append((summary_line(plan), "bold red" if plan.refusal else "bold"))
    return lines


def render_text(plan: Plan) -> str:
    return "\n".join(text for text, _ in render_lines(plan))


def change_json(c: Change) -> dict[str, Any]:
    out: dict[str, Any] = {
        "action": str(c.action),
        "name": c.name,
        "kind": str(c.kind),
        "reason": c.reason,
    }
    if c.fields:
        out["fields"] = list(c.fields)
    if c.upload_bytes:
        out["upload_bytes"] = c.upload_bytes
    if c.record is not None and c.record.remote_id:
        out["remote_id"] = c.record.remote_id
    return out


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "changes": [change_json(c) for c in plan.changes],
        "kept": [change_json(c) for c in plan.kept],
        "summary": {
            **{a: plan.counts.get(a, 0) for a in (
                "create", "update", "replace", "delete", "resume", "follow", "import", "move")},
            "in_sync": plan.in_sync,
            "upload_bytes": plan.upload_bytes,
            "has_changes": plan.has_changes,
        },
        "refusal": plan.refusal,
        "partial": plan.partial,
    }
