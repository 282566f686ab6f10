"""The VOD client of a run, built where the state is known: its API budget is the account's.

With a shared state (PostgreSQL) the token buckets are rows of the state, so every process on
every host spends from one allowance per operation (`cloud/budget.py`); with a SQLite state,
which admits one writer, they are this process's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from vodsync.state.interface import Store

if TYPE_CHECKING:  # the SDKs cost ~0.3 s to import; `plan` without --refresh never needs them
    from vodsync.cloud.budget import TokenStore
    from vodsync.cloud.settings import CloudSettings
    from vodsync.cloud.vod import VodClient

__all__ = ["vod_client"]


def vod_client(settings: CloudSettings, store: Store, **kwargs: Any) -> VodClient:
    from vodsync.cloud.budget import Budget
    from vodsync.cloud.vod import VodClient

    tokens = cast("TokenStore", store) if store.shared else None  # PostgresStore.take: one UPDATE
    return VodClient(settings, budget=Budget(settings.api_limits, tokens=tokens), **kwargs)
