"""`--target PATTERN` / `--exclude PATTERN`: the subset of items a plan covers. Pure.

Patterns are shell-style globs (`fnmatch`, case-sensitive) on item names, so
`--target 'season1/*'` selects every item under `season1/`. An item is selected
when it matches some target (or no target is given) and no exclude. A plan over
a selection is *partial*: items outside it are neither created, updated nor
deleted, and pruning considers only the selected items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Targets:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: Sequence[str] | None, exclude: Sequence[str] | None) -> Targets | None:
        """The selection the flags describe, or None when they select everything."""
        if not include and not exclude:
            return None
        return cls(tuple(include or ()), tuple(exclude or ()))

    def selects(self, name: str) -> bool:
        if self.include and not any(fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatchcase(name, p) for p in self.exclude)

    def describe(self) -> str:
        """How a partial plan names its selection, e.g. `only items matching intro*, except intro-old`."""
        parts = []
        if self.include:
            parts.append("only items matching " + ", ".join(self.include))
        if self.exclude:
            parts.append(("except " if self.include else "all items except ") + ", ".join(self.exclude))
        return "; ".join(parts) if len(parts) == 1 else f"{parts[0]}, {parts[1]}"


@dataclass(frozen=True)
class Names:
    """An exact set of item names: the daemon's incremental pass plans only the items an edit touched
    (a set lookup per item, where a glob per name would cost |names| x |items|)."""

    names: frozenset[str]

    def selects(self, name: str) -> bool:
        return name in self.names

    def describe(self) -> str:
        return f"only the {len(self.names)} item(s) the last change touched"
