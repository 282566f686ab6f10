"""`vodsync state list | show | rm | mv`: looking at the state file and repairing it by hand.

None of these calls VOD. `forget` removes records and leaves their media
untouched (the media is simply no longer vodsync's); `moves.rekey` renames one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vodsync.state.interface import Store
from vodsync.state.records import Op
from vodsync.state.store import Record, RecordStatus


def record_view(record: Record) -> dict[str, Any]:
    """A record as `state show` prints it: every field (records hold no secret), JSON-ready."""
    out = dataclasses.asdict(record)
    out["status"] = str(record.status)
    out["intent"] = None if record.intent is None else record.intent.to_json()
    return out


@dataclass(frozen=True)
class Forgotten:
    name: str
    record: Record | None  # None: nothing was recorded under this name
    warning: str | None = None  # what forgetting it leaves behind, if anything


def forget(store: Store, names: Sequence[str]) -> list[Forgotten]:
    """Forget each recorded name (all in one transaction); the media stays in VOD as it is."""
    out: list[Forgotten] = []
    with store.transaction():
        for name in names:
            record = store.get(name)
            if record is None:
                out.append(Forgotten(name, None))
                continue
            store.delete(name)
            out.append(Forgotten(name, record, _left_behind(record)))
    return out


def _left_behind(record: Record) -> str | None:
    intent = record.intent
    if record.status is RecordStatus.CREATING or (intent is not None and intent.op is Op.CREATE):
        return "it was being created: media made by the interrupted run is no longer tracked (`vodsync gc`)"
    if record.job_id and record.status is RecordStatus.INGESTING:
        return f"its URL job {record.job_id} may still deliver a video that nobody tracks"
    if intent is not None and intent.supersedes is not None:
        return f"the media it replaced ({intent.supersedes.media_id}) is no longer deleted by vodsync"
    return None
