"""The VOD operations vodsync calls, and the per-account limits the service documents for them.

It sits below `config.py` and `cloud/` and imports nothing from vodsync: the config checks the
names under `api_limits:` against `OPERATIONS`, and `cloud/budget.py` paces every call with
`DOCUMENTED_QPS` merged with those overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["DOCUMENTED_QPS", "OPERATIONS", "UNDOCUMENTED"]

_DAY = 86400.0

# Calls per second allowed to the whole account (shared by every RAM user and so by every host).
# Source: /work/shared/docs/vod-api.md §00 "Per-account QPS" (which takes precedence) and the
# limits after §1 "Common errors"; a limit given as a range by region is taken at its lower bound.
DOCUMENTED_QPS: Mapping[str, float] = MappingProxyType(
    {
        "CreateUploadVideo": 80.0,  # 80-120/s by region
        "RefreshUploadVideo": 80.0,  # 80-120/s by region
        "CreateUploadImage": 100.0,
        "CreateUploadAttachedMedia": 100.0,
        "RegisterMedia": 50.0,
        "GetVideoInfos": 100.0,  # "GetVideoInfo(s) 100/s"
        "UpdateVideoInfo": 100.0,  # (UpdateVideoInfos, 30/s, is not called by vodsync)
        "DeleteVideo": 30.0,
        "SearchMedia": 50.0,
        "GetURLUploadInfos": 100.0,  # §1, after "Common errors"
        # 200,000 a day, read as calls (whether a batch of 20 URLs counts once or 20 times is
        # unverified), spread evenly over the day: about 2.3 per second.
        "UploadMediaByURL": 200_000 / _DAY,
    }
)

# Operations vodsync calls for which no limit is documented: not paced unless `api_limits:` sets one.
UNDOCUMENTED = frozenset(
    {
        "CancelUrlUploadJobs",
        "GetImageInfo",
        "GetAttachedMediaInfo",
        "UpdateImageInfos",
        "UpdateAttachedMediaInfos",
        "DeleteImage",
        "DeleteAttachedMedia",
    }
)

# Every operation `cloud/vod.py` calls: the names `api_limits:` may set.
OPERATIONS = frozenset(DOCUMENTED_QPS) | UNDOCUMENTED
