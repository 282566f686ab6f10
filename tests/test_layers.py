"""The architecture's import rules, checked on the source (docs/architecture.md).

`cli -> daemon -> engine -> {desired, state, cloud} -> {errors, config}`;
desired, state and cloud do not import one another; the SDKs live only in
cloud/, watchdog only in daemon/, yaml only in desired/, config and yamldoc; the emulator
imports nothing from the rest of vodsync.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vodsync"

# package -> vodsync packages it must not import
FORBIDDEN = {
    "desired": {"state", "cloud", "engine", "daemon", "cli", "emulator", "ui"},
    "state": {"desired", "cloud", "engine", "daemon", "cli", "emulator", "ui"},
    "cloud": {"desired", "state", "engine", "daemon", "cli", "emulator", "ui"},
    "engine": {"daemon", "cli", "emulator", "ui"},
    "daemon": {"cli", "emulator"},
    "errors": {"desired", "state", "cloud", "engine", "daemon", "cli", "emulator", "config", "ui"},
    "config": {"desired", "state", "cloud", "engine", "daemon", "cli", "emulator", "ui"},
    "checksum": {"desired", "state", "cloud", "engine", "daemon", "cli", "emulator", "config", "ui", "errors"},
    "vocab": {"desired", "state", "cloud", "engine", "daemon", "cli", "emulator", "config", "ui", "errors"},
    "api_limits": {"desired", "state", "cloud", "engine", "daemon", "cli", "emulator", "config", "ui", "errors"},
    "yamldoc": {"desired", "state", "cloud", "engine", "daemon", "cli", "emulator", "config", "ui", "errors"},
}
# third-party module -> the packages allowed to import it
CONFINED = {
    "aliyunsdkcore": {"cloud"},
    "aliyunsdkvod": {"cloud"},
    "oss2": {"cloud"},
    "psycopg": {"state"},
    "watchdog": {"daemon"},
    "yaml": {"desired", "config", "yamldoc"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_respects_the_layers(path: Path) -> None:
    layer = _layer(path)
    problems = []
    for name in _imports(path):
        top, _, rest = name.partition(".")
        if top == "vodsync":
            target = rest.partition(".")[0]
            if layer == "emulator" and target and target != "emulator":
                problems.append(f"the emulator imports {name}")
            if target in FORBIDDEN.get(layer, set()):
                problems.append(f"{layer} imports {name}")
        elif top in CONFINED and layer not in CONFINED[top]:
            problems.append(f"{layer} imports {top} (allowed only in {sorted(CONFINED[top])})")
    assert not problems, f"{path.relative_to(PACKAGE)}: " + "; ".join(problems)


def test_the_rules_see_real_imports() -> None:
    # Guard against a checker that passes because it reads nothing.
    assert "oss2" in _imports(PACKAGE / "cloud" / "upload.py")
    assert any(n.startswith("vodsync.state") for n in _imports(PACKAGE / "engine" / "diff.py"))
