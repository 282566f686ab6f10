"""A local ApsaraVideo VOD + OSS service that the unmodified SDKs talk to.

It imports nothing from the rest of vodsync: it describes the service, not our
assumptions about it. See docs/emulator.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vodsync.emulator.server import Emulator

__all__ = ["Emulator"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing a leaf module (clock, errors) does not pull in the HTTP server.
    if name == "Emulator":
        from vodsync.emulator.server import Emulator

        return Emulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
