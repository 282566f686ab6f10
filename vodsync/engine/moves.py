"""Renames: a manifest's `moved: [{from: OLD, to: NEW}]`, and `vodsync state mv OLD NEW`.

An item's name is its identity in the state file. Renaming it in a manifest
alone would plan a create of NEW and a delete of OLD: a new media ID, breaking
every page that embeds the old one. A move re-keys the record instead; the
media, its ID and its bytes are kept, and no call is made. The record keeps its
ReferenceId too (the one the service holds), so crash recovery still finds it.

`plan_moves` is pure (the plan's view of the records after the moves);
`rekey` writes one move to the state file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vodsync.desired.items import Kind, Move
from vodsync.engine.diff import Action, Change
from vodsync.engine.ownership import Namespace
from vodsync.errors import StateError
from vodsync.state.interface import Store
from vodsync.state.store import Record


@dataclass(frozen=True)
class MovePlan:
    records: dict[str, Record]  # the records as they will be once the moves are carried out
    changes: list[Change] = field(default_factory=list)  # one MOVE per record to re-key
    refusal: str | None = None  # a move that cannot be carried out: nothing is applied


def plan_moves(moves: Sequence[Move], records: Mapping[str, Record]) -> MovePlan:
    """The moves that apply to `records`, in order (`a → b` then `b → c` re-keys `a` as `c`).

    A move whose OLD is not recorded is already done (or was never applied): it is
    skipped, so `moved:` entries can stay in the manifests. A move onto a recorded
    name is refused: two records cannot share one name (`vodsync state rm` one first).
    """
    view = dict(records)
    changes: list[Change] = []
    problems: list[str] = []
    for m in moves:
        old = view.get(m.old)
        if old is None:
            continue
        if m.new in view:
            where = f" ({m.origin})" if m.origin else ""
            problems.append(f"moved {m.old} → {m.new}{where}: both names are recorded; "
                            f"forget one first (`vodsync state rm NAME`)")
            continue
        view[m.new] = old.replace(name=m.new)
        del view[m.old]
        changes.append(Change(Action.MOVE, m.new, old.kind, f"moved {m.old} → {m.new}", record=old))
    refusal = "; ".join(problems) if problems else None
    return MovePlan(view, changes, refusal)


def reference_conflicts(
    changes: Sequence[Change], records: Mapping[str, Record], namespace: Namespace
) -> tuple[set[str], str | None]:
    """The creates of new videos that would take the ReferenceId a moved video still holds, and a
    refusal naming them (None when there are none); they must not be carried out.

    A moved video keeps the ReferenceId derived (in the state's `namespace`) from its old name. A new item under that old
    name would ask VOD for the same ReferenceId; the create would be refused as a duplicate, and
    the ambiguous-create recovery would adopt the moved video and upload into it.
    """
    held = {r.reference_id: r.name for r in records.values() if r.reference_id}
    clashes: dict[str, str] = {}  # new item -> the record holding its ReferenceId
    for c in changes:
        if c.action is Action.CREATE and c.kind is Kind.VIDEO and c.record is None:
            owner = held.get(namespace.reference_id(c.name))
            if owner is not None and owner != c.name:
                clashes[c.name] = owner
    if not clashes:
        return set(), None
    words = "; ".join(f"{new} (its ReferenceId is held by {owner}, once named {new})" for new, owner in clashes.items())
    return set(clashes), (f"a new video cannot reuse the name of a video that was moved: {words}; "
                          "give the new item another name")


def moved_from(change: Change) -> str:
    """The old name of a MOVE change (its record is the record as it was, under the old name)."""
    assert change.action is Action.MOVE and change.record is not None
    return change.record.name


def rekey(store: Store, old: str, new: str) -> Record:
    """Give the record `old` the name `new`, in one transaction. No call to VOD."""
    with store.transaction():
        record = store.get(old)
        if record is None:
            raise StateError(f"{old!r} is not recorded in {store.location} (`vodsync state list` shows what is)")
        if store.get(new) is not None:
            raise StateError(f"{new!r} is already recorded in {store.location}; forget it first with "
                             f"`vodsync state rm {new}` if the record is stale")
        moved = record.replace(name=new, last_result=f"moved from {old}")
        store.put(moved)
        store.delete(old)
    return moved
