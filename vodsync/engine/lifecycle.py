"""The state-only actions of a plan, carried out before the executor: moves, then imports.

A MOVE re-keys a record (`moves.rekey`) and an IMPORT reads the media and records
it (`imports.import_media`); neither uploads, creates or deletes anything. Each
is an outcome of the run like any other, and one failing does not stop the
others. What remains of the plan goes to the executor unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from vodsync.engine.diff import Action, Change
from vodsync.engine.execution import Outcome, Reporter, log
from vodsync.engine.imports import import_media
from vodsync.engine.moves import moved_from, rekey
from vodsync.engine.plan import Plan
from vodsync.errors import VodsyncError
from vodsync.state.interface import Store

if TYPE_CHECKING:
    from vodsync.cloud.vod import VodClient

STATE_ONLY = frozenset({Action.MOVE, Action.IMPORT})


def split_state_only(plan: Plan) -> tuple[list[Change], Plan]:
    """The plan's moves and imports (in plan order), and the plan without them."""
    state_only = [c for c in plan.actions if c.action in STATE_ONLY]
    rest = tuple(c for c in plan.actions if c.action not in STATE_ONLY)
    return state_only, dataclasses.replace(plan, actions=rest)


def carry_out(changes: list[Change], store: Store, client: VodClient, reporter: Reporter) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for c in changes:
        try:
            if c.action is Action.MOVE:
                old = moved_from(c)
                record = rekey(store, old, c.name)
                message = f"moved from {old}, keeping {record.remote_id or 'its record'}"
            else:
                assert c.item is not None and c.item.import_id
                record = import_media(store, client, c.item, c.item.import_id)
                message = f"{record.last_result} ({record.remote_id})"
            outcome = Outcome(c.name, str(c.action), True, message)
        except VodsyncError as err:
            outcome = Outcome(c.name, str(c.action), False, err.message)
        outcomes.append(outcome)
        reporter.outcome(outcome)
        (log.info if outcome.ok else log.warning)(
            "%s %s: %s", outcome.action, outcome.name, outcome.message,
            extra={"item": outcome.name, "action": outcome.action, "ok": outcome.ok},
        )
    return outcomes
