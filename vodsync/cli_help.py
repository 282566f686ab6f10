"""Each subcommand's `--help`: a one-line description and an example (argparse epilogs).

Kept apart from `cli.py`'s parser so the examples are one table a reader can
check at a glance; `tests/test_lifecycle.py` checks that every subcommand has one.
"""

from __future__ import annotations

import argparse

# command path ("state rm") -> example lines (each a complete command line)
EXAMPLES: dict[str, tuple[str, ...]] = {
    "plan": ("vodsync plan -f manifests --detailed-exitcode",
             "vodsync plan --target 'season1/*' --prune -out plan.json",
             "vodsync plan --format markdown > plan.md"),
    "apply": ("vodsync apply -f manifests --prune", "vodsync apply plan.json"),
    "status": ("vodsync status --json",),
    "validate": ("vodsync validate -f manifests",),
    "schema": ("vodsync schema > manifest.schema.json",),
    "watch": ("vodsync watch --config /etc/vodsync/vodsync.yaml --http 127.0.0.1:9101",),
    "gc": ("vodsync gc", "vodsync gc --yes"),
    "import": ("vodsync import intro 3f2a1c0e9d8b4a7f8e6d5c4b3a291807", "vodsync import --discover",
               "vodsync import --discover --namespace team-a"),
    "state": ("vodsync state list",),
    "state list": ("vodsync state list --json",),
    "state show": ("vodsync state show intro", "vodsync state show --namespace"),
    "state rm": ("vodsync state rm archive-ep1 archive-ep2",),
    "state mv": ("vodsync state mv intro episodes/intro",),
    "completion": ("vodsync completion bash > /etc/bash_completion.d/vodsync",
                   "vodsync completion fish > ~/.config/fish/completions/vodsync.fish"),
    "emulator": ("vodsync emulator --port 9090 --data-dir .emulator",),
}


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name (none if it has none)."""
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk of its tree
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def _help_of(sub: argparse._SubParsersAction) -> dict[str, str]:  # noqa: SLF001
    return {a.dest: a.help or "" for a in sub._choices_actions}  # noqa: SLF001


def add_descriptions_and_examples(sub: argparse._SubParsersAction, prefix: str = "") -> None:  # noqa: SLF001
    """Give every subcommand (recursively) its one-line help as description and its examples as epilog."""
    helps = _help_of(sub)
    for name, parser in sub.choices.items():
        path = f"{prefix}{name}"
        if not parser.description:
            words = helps.get(name, "").rstrip(".")
            parser.description = words[:1].upper() + words[1:] + "."
        examples = EXAMPLES.get(path, ())
        if examples:
            parser.epilog = "example" + ("s" if len(examples) > 1 else "") + ":\n" + "\n".join(
                f"  {line}" for line in examples)
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                add_descriptions_and_examples(action, prefix=f"{path} ")
