"""How vodsync reaches VOD: credentials, region, endpoint override and timeouts.

`CloudSettings` is the single value the cloud layer needs to build an SDK client.
`endpoint=None` means the real regional endpoint (https); an explicit URL such as
`http://127.0.0.1:9090` points every call at that host (the emulator). `api_limits` are the
config's overrides of the account's per-operation QPS (`cloud/budget.py`). Its repr never shows
the secret or the token.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class CloudSettings:
    access_key_id: str
    access_key_secret: str
    security_token: str | None = None
    region: str = "cn-shanghai"
    endpoint: str | None = None
    connect_timeout: float = 5
    read_timeout: float = 30
    api_limits: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"endpoint must look like http(s)://host[:port], got {self.endpoint!r}")

    def __repr__(self) -> str:
        token = "None" if self.security_token is None else "'***'"
        return (
            f"CloudSettings(access_key_id={self.access_key_id!r}, access_key_secret='***', "
            f"security_token={token}, region={self.region!r}, endpoint={self.endpoint!r}, "
            f"connect_timeout={self.connect_timeout!r}, read_timeout={self.read_timeout!r}, "
            f"api_limits={dict(self.api_limits)!r})"
        )

    __str__ = __repr__

    def secrets(self) -> tuple[str, ...]:
        """The literal secret values, so error messages can be scrubbed of them."""
        return tuple(s for s in (self.access_key_secret, self.security_token) if s)


def is_loopback_url(url: str) -> bool:
    """True for http(s)://localhost or a loopback IP: such hosts must never go through a proxy."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
