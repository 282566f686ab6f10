"""A plan as Markdown, for a pull-request comment (`vodsync plan --format markdown`). Pure.

The body has a hidden marker (`MARKER`, so a CI job can find and update its own
comment), a heading with the summary line, the deletions called out in the open
(they are what a reviewer must not miss), a note when the plan is partial or
refused, and the full plan in a collapsible `<details>` section, in a `diff`
block so GitHub and GitLab colour additions and deletions.
"""

from __future__ import annotations

import re

from vodsync.engine.diff import Action
from vodsync.engine.plan import Plan, render_lines, summary_line

MARKER = "<!-- vodsync-plan -->"


def _fence(lines: list[str]) -> str:
    """A code fence longer than any backtick run in the text, so no value can close it early."""
    longest = max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(plan: Plan) -> str:
    out = [MARKER, "### vodsync plan", "", f"**{summary_line(plan)}**", ""]
    if plan.refusal:
        out += [f"> [!CAUTION]\n> **Refused:** {plan.refusal}", ""]
    deletes = [c for c in plan.changes if c.action is Action.DELETE]
    if deletes:
        out.append(f"> [!WARNING]\n> **{len(deletes)} deletion(s)**: this apply deletes media from VOD, "
                   "which cannot be undone:")
        for c in deletes:
            remote = c.record.remote_id if c.record is not None and c.record.remote_id else "no media yet"
            out.append(f"> - `{c.name}` ({c.kind} {remote})")
        out.append("")
    if plan.kept:
        out += [f"{len(plan.kept)} item(s) left the manifests and are kept (not deleted).", ""]
    if plan.partial:
        out += [f"**Partial plan**: {plan.partial}; other items are neither changed nor pruned.", ""]
    body = [text[2:] if text.startswith("  ") else text for text, _ in render_lines(plan)]
    while body and body[-1] in ("", summary_line(plan)) or body and body[-1].startswith("Partial plan:"):
        body.pop()
    if body:
        fence = _fence(body)
        changes = len(plan.changes)
        out += [f"<details><summary>Details: {changes} change(s), {plan.in_sync} in sync</summary>", "",
                f"{fence}diff", *body, fence, "", "</details>", ""]
    return "\n".join(out)
