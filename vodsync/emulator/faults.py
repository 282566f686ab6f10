"""Fault injection: rules that make matching calls fail, stall or lose their connection.

A rule matches a call name (`CreateUploadVideo`, `oss:PUT`, globs like `oss:*` or `*`).
Besides error codes, a rule can `reset` the connection, be `slow` (and pace the body), `hold`
the call until the rules are next replaced (a test holds an upload in flight, then lets it go), or
`corrupt` the body: one bit flipped as it arrives, as damage in transit would, and then
stored and checksummed like any body (so only a client that checks its CRC notices).
`count` limits it to the next N matching calls, `rate` makes it fire with that
probability (seeded, so runs repeat), both together mean "with probability `rate`,
at most `count` times". The first rule that fires wins. Rendering the error in
the right wire format is the server's job; this module only decides.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase

RESET = "reset"  # drop the connection without a response
SLOW = "slow"  # wait delay_ms, then serve normally
CORRUPT = "corrupt"  # flip a bit of the request body as it arrives, then serve normally
HOLD = "hold"  # wait until the rules are replaced (or HOLD_MAX_SECONDS), then serve normally
HOLD_MAX_SECONDS = 60.0  # a test that never lets a held call go does not hang the server for ever

# Status of each error code the emulator knows how to inject (VOD RPC and OSS share codes
# where they overlap; a rule may also name any code and give "status" itself).
ERROR_STATUS: dict[str, int] = {
    "Throttling": 400,
    "Throttling.User": 400,
    "Throttling.Api": 400,
    "ServiceUnavailable": 503,
    "ServiceUnAvailable": 503,
    "InternalError": 500,
    "SecurityTokenExpired": 403,
    "InvalidAccessKeyId": 403,
    "AccessDenied": 403,
    "Forbidden.RAM": 403,
    "InvalidAccessKeyId.NotFound": 404,
    "RequestTimeout": 400,
    "SignatureNonceUsed": 400,
    "Forbidden.IllegalStatus": 400,
}

ERROR_MESSAGE: dict[str, str] = {
    "Throttling": "Request was denied due to request throttling.",
    "Throttling.User": "Request was denied due to user flow control.",
    "Throttling.Api": "Request was denied due to api flow control.",
    "ServiceUnavailable": "The request has failed due to a temporary failure of the server.",
    "ServiceUnAvailable": "The request has failed due to a temporary failure of the server.",
    "InternalError": "The request processing has failed due to some unknown error, exception or failure.",
    "SecurityTokenExpired": "The security token you provided has expired.",
    "InvalidAccessKeyId": "The OSS Access Key Id you provided does not exist in our records.",
    "AccessDenied": "You have no right to access this object because of bucket acl.",
    "Forbidden.RAM": "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
    "InvalidAccessKeyId.NotFound": "Specified access key is not found.",
    "RequestTimeout": "Your socket connection to the server was not read from or written to within the timeout period.",
}


@dataclass(frozen=True)
class FaultRule:
    match: str
    error: str
    rate: float | None = None
    count: int | None = None
    delay_ms: int = 0
    status: int | None = None
    message: str | None = None
    bytes_per_second: int | None = None  # slow: pace the request body like one WAN stream

    @classmethod
    def parse(cls, raw: Mapping) -> FaultRule:
        """Validate one rule from the control plane (raises ValueError with a readable reason)."""
        unknown = set(raw) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown rule fields: {sorted(unknown)}")
        match, error = raw.get("match"), raw.get("error")
        if not isinstance(match, str) or not match:
            raise ValueError("rule needs a 'match' string")
        if not isinstance(error, str) or not error:
            raise ValueError("rule needs an 'error' string")
        rate = raw.get("rate")
        if rate is not None and not (isinstance(rate, int | float) and 0 <= rate <= 1):
            raise ValueError("'rate' must be a number between 0 and 1")
        count = raw.get("count")
        if count is not None and not (isinstance(count, int) and count >= 0):
            raise ValueError("'count' must be a non-negative integer")
        delay_ms = raw.get("delay_ms", 0)
        if not isinstance(delay_ms, int | float) or delay_ms < 0:
            raise ValueError("'delay_ms' must be a non-negative number")
        status = raw.get("status")
        if error not in (RESET, SLOW, CORRUPT, HOLD) and status is None and error not in ERROR_STATUS:
            raise ValueError(f"unknown error {error!r}: give its HTTP 'status' too")
        bps = raw.get("bytes_per_second")
        if bps is not None and not (isinstance(bps, int) and bps > 0 and error == SLOW):
            raise ValueError("'bytes_per_second' must be a positive integer, on a 'slow' rule")
        return cls(match, error, None if rate is None else float(rate), count, int(delay_ms), status,
                   raw.get("message"), bps)

    @property
    def http_status(self) -> int:
        return self.status if self.status is not None else ERROR_STATUS.get(self.error, 500)

    @property
    def error_message(self) -> str:
        return self.message or ERROR_MESSAGE.get(self.error, f"Injected fault: {self.error}.")


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._left: list[int | None] = []
        self._random = random.Random()
        self._release = threading.Event()  # set (and replaced) whenever the rules are replaced
        self._held = threading.Condition(self._lock)
        self._holding = 0

    def set_rules(self, rules: Sequence[Mapping | FaultRule], seed: int | None = None) -> None:
        """Replace all rules (an empty list clears them). Raises ValueError on a bad rule."""
        parsed = [r if isinstance(r, FaultRule) else FaultRule.parse(r) for r in rules]
        with self._lock:
            self._rules = parsed
            self._left = [r.count for r in parsed]
            self._random = random.Random(seed)
            self._release.set()  # the calls held under the old rules go on
            self._release = threading.Event()

    def hold(self) -> None:
        """Block the calling request until the rules are next replaced (a `hold` rule fired)."""
        with self._lock:
            release = self._release
            self._holding += 1
            self._held.notify_all()
        try:
            release.wait(HOLD_MAX_SECONDS)
        finally:
            with self._lock:
                self._holding -= 1
                self._held.notify_all()

    @property
    def holding(self) -> int:
        """How many calls a `hold` rule is holding right now."""
        with self._lock:
            return self._holding

    def wait_holding(self, count: int, timeout: float) -> bool:
        """Wait until at least `count` calls are held (a test's event, not a sleep); False on timeout."""
        with self._held:
            return self._held.wait_for(lambda: self._holding >= count, timeout)

    def clear(self) -> None:
        self.set_rules([])

    def rules(self) -> list[dict]:
        with self._lock:
            rules = zip(self._rules, self._left, strict=True)
            return [{**asdict(r), "remaining": left, **({"holding": self._holding} if r.error == HOLD else {})}
                    for r, left in rules]

    def pick(self, call: str) -> FaultRule | None:
        """The rule that fires for this call, if any (consumes one of its `count`)."""
        with self._lock:
            for i, rule in enumerate(self._rules):
                if not fnmatchcase(call, rule.match):
                    continue
                if self._left[i] is not None and self._left[i] <= 0:
                    continue
                if rule.rate is not None and self._random.random() >= rule.rate:
                    continue
                if self._left[i] is not None:
                    self._left[i] -= 1
                return rule
        return None
