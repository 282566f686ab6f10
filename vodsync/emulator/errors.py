"""Errors the emulated services answer with, in the shapes the real ones use.

`VodApiError` becomes the flat JSON error body of VOD RPC
(`{"RequestId","HostId","Code","Message","Recommend"}`); `OssApiError` becomes
OSS's XML `<Error>` document. The HTTP status travels with the error.
"""

from __future__ import annotations


class VodApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class OssApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400, ec: str = "0000-00000000") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.ec = ec
