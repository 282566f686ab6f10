"""One reconcile pass, the same for `plan`, `apply` and the daemon: desired -> diff -> plan -> execute.

`build_plan` reads the state (and, with a client, the remote media for
`--refresh`) but writes nothing remote; `apply` hands the plan to the executor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vodsync.desired.items import DesiredItem, Kind, Move
from vodsync.engine.content import hashes_needed
from vodsync.engine.diff import Action, Change, diff
from vodsync.engine.moves import plan_moves, reference_conflicts
from vodsync.engine.ownership import recorded_namespace
from vodsync.engine.plan import Plan, PlanOptions, check_plan, make_plan
from vodsync.engine.targets import Names, Targets
from vodsync.state.interface import Store
from vodsync.state.store import Record, RecordStatus

if TYPE_CHECKING:  # `plan` never executes: it does not pay for the executor's imports
    from vodsync.cloud.vod import VodClient
    from vodsync.engine.executor import ExecOptions, Executor, Reporter, Result


def build_plan(
    desired: Sequence[DesiredItem],
    store: Store,
    options: PlanOptions,
    *,
    refresh_with: VodClient | None = None,
    remember_hashes: bool = False,
    records: Mapping[str, Record] | None = None,
    moves: Sequence[Move] = (),
    targets: Targets | Names | None = None,
) -> Plan:
    """Plan `desired` against the state; `records`, if the caller already read them, saves a read.

    `moves` (the manifests' `moved:`) re-key records first; `targets` then narrows the plan
    to the selected items (a partial plan: nothing outside it is created, changed or pruned)."""
    if records is None:
        records = store.records()
    described = len(desired)
    moved = plan_moves(moves, records)
    records, move_changes = moved.records, moved.changes
    if targets is not None:
        desired = [d for d in desired if targets.selects(d.name)]
        records = {n: r for n, r in records.items() if targets.selects(n)}
        move_changes = [c for c in move_changes if targets.selects(c.name)]
    hashes = hashes_needed(
        desired, records, cached=store.cached_hash, remember=store.remember_hash if remember_hashes else None
    )
    remote = None
    if refresh_with is not None:
        from vodsync.engine.remote import read_remote

        remote = read_remote(refresh_with, records)
    changes = _net_of_parts_sent([*move_changes, *diff(desired, records, hashes=hashes, remote=remote)],
                                 store.checkpoint_dir)
    clashing, clash = reference_conflicts(changes, moved.records, recorded_namespace(store))
    if clashing:  # never carried out, even where a refusal is only logged (the daemon)
        changes = [c for c in changes if not (c.action is Action.CREATE and c.name in clashing)]
    refusal = moved.refusal or clash
    plan = make_plan(changes, options, desired_count=len(desired), manifests_count=described,
                     partial=targets.describe() if targets else None, refusal=refusal)
    acting = {c.name for c in plan.actions}
    processing = sum(1 for d in desired if d.name not in acting and (r := records.get(d.name)) is not None
                     and r.status in (RecordStatus.INGESTING, RecordStatus.PROCESSING))
    return dataclasses.replace(plan, processing=processing) if processing else plan


def _net_of_parts_sent(changes: list[Change], checkpoints: Path) -> list[Change]:
    """A resumed video upload sends only what OSS does not hold yet: its byte count says so.
    (Images and attached media are created anew on a resume: all their bytes go up again.)"""
    resumes = [i for i, c in enumerate(changes)
               if c.action is Action.RESUME and c.kind is Kind.VIDEO and c.item is not None and c.item.local
               and c.record is not None and c.record.status is RecordStatus.UPLOADING]
    if not resumes:
        return changes
    from vodsync.cloud.upload import sent_bytes  # oss2: only when there is a resume to count

    changes = list(changes)
    for i in resumes:
        c = changes[i]
        assert c.item is not None and c.item.local is not None
        sent = sent_bytes(checkpoints, c.item.local.path)
        changes[i] = dataclasses.replace(c, upload_bytes=max(c.upload_bytes - sent, 0))
    return changes


def apply(
    plan: Plan,
    store: Store,
    client: VodClient,
    *,
    options: ExecOptions,
    reporter: Reporter | None = None,
    executor: Executor | None = None,
) -> Result:
    from vodsync.engine.executor import Executor
    from vodsync.engine.lifecycle import carry_out, split_state_only

    check_plan(plan)
    executor = executor or Executor(
        store, client, checkpoint_dir=store.checkpoint_dir, options=options, reporter=reporter
    )
    state_only, plan = split_state_only(plan)  # moves and imports: records first, no upload
    done = carry_out(state_only, store, client, executor.reporter) if state_only else []
    result = executor.run(plan)
    result.outcomes[:0] = done
    return result
