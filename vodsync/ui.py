"""What a person sees: the plan, upload progress and the run's summary.

On a terminal, rich draws colours and live progress bars (bytes and rate);
otherwise every event is one plain log line, so CI logs and journald stay
readable. Nothing here decides anything; it only renders engine values.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console

from vodsync.engine.diff import Action, Change
from vodsync.engine.plan import Plan, creates_media, field_changes, human_bytes, uncleared_text

if TYPE_CHECKING:  # `vodsync plan` prints a plan without importing the executor
    from rich.progress import TaskID

    from vodsync.engine.execution import Outcome, Result, Waiting

log = logging.getLogger("vodsync.apply")


def console_for(stream: IO[str]) -> Console:
    return Console(file=stream, highlight=False, soft_wrap=True)


def print_plan(plan: Plan, console: Console) -> None:
    for text, style in render_lines(plan):
        console.print(text, style=style or None, markup=False)


_SYMBOL = {
    Action.CREATE: ("+", "green"),
    Action.UPDATE: ("~", "yellow"),
    Action.REPLACE: ("±", "magenta"),
    Action.DELETE: ("-", "red"),
    Action.RESUME: (">", "cyan"),
    Action.FOLLOW: ("…", "blue"),
    Action.IMPORT: ("<", "cyan"),
    Action.MOVE: ("→", "cyan"),
}


def summary_line(plan: Plan) -> str:
    if plan.refusal:
        return f"Plan refused: {plan.refusal}"
    if not plan.has_changes:
        kept = f"; {len(plan.kept)} kept (not in manifests)" if plan.kept else ""
        return f"No changes. {plan.in_sync} item(s) in sync{kept}{_processing(plan)}."
    order = ("create", "update", "replace", "delete", "resume", "follow", "import", "move")
    parts = [f"{plan.counts.get(a, 0)} to {a}" for a in order if plan.counts.get(a) or a in order[:4]]
    upload = f"; {human_bytes(plan.upload_bytes)} to upload" if plan.upload_bytes else ""
    return f"Plan: {', '.join(parts)}{upload}{_processing(plan)}."


def _processing(plan: Plan) -> str:
    if not plan.processing:
        return ""
    return f"; {plan.processing} still processing at VOD (apply follows {'it' if plan.processing == 1 else 'them'})"


def render_lines(plan: Plan) -> list[tuple[str, str]]:
    """(text, style) per line of the human form; styles are rich style names. Under each change, what
    it sets: `title: "Intro" → "Intro (final)"` (a create lists every attribute it sets)."""
    rows = list(plan.changes)
    width = max((len(c.name) for c in [*rows, *plan.kept, *plan.uncleared]), default=4)
    lines: list[tuple[str, str]] = []
    for c in rows:
        sym, style = _SYMBOL[c.action]
        extra = f"  ({human_bytes(c.upload_bytes)} to upload)" if c.upload_bytes else ""
        lines.append((f"  {sym} {c.action:<8} {c.name:<{width}}  {c.kind:<8}  {c.reason}{extra}", style))
        if c.action is not Action.DELETE:
            lines.extend((f"      {line}", "") for line in _field_lines(c))
    for c in plan.kept:
        lines.append((f"    {'kept':<8} {c.name:<{width}}  {c.kind:<8}  {c.reason}", "dim"))
    for c in plan.uncleared:
        lines.append((f"    {'note':<8} {c.name:<{width}}  {c.kind:<8}  {uncleared_text(c)}", "dim"))
    if lines:
        lines.append(("", ""))
    if plan.partial:
        lines.append((f"Partial plan: {plan.partial}.", "yellow"))
    lines.append((summary_line(plan), "bold red" if plan.refusal else "bold"))
    return lines


def _field_lines(c: Change) -> list[str]:
    if creates_media(c):
        return [f"{f.field}: {_shown(f.after)}" for f in field_changes(c)]
    return [f"{f.field}: {_shown(f.before)} → {_shown(f.after)}" for f in field_changes(c)]


def _shown(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value, ensure_ascii=False)


def render_text(plan: Plan) -> str:
    return "\n".join(text for text, _ in render_lines(plan))


# ------------------------------------------------------------------ the plan as Markdown
# For a pull-request comment (`vodsync plan --format markdown`): a hidden marker (`MARKER`, so
# a CI job can find and update its own comment), a heading with the summary line, the
# deletions called out in the open (what a reviewer must not miss), a note when the plan is
# partial or refused, and the full plan in a collapsible `<details>` section, in a `diff`
# block so GitHub and GitLab colour additions and deletions.

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


class RichReporter:
    """Live progress bars for uploads (bytes, rate, ETA) and a line saying what `--wait` is
    following; notices are drawn above them (outcomes are the log lines, also drawn above).

    It implements the executor's `Reporter` interface (`engine/execution.py`).
    """

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            _UploadsOnly(BarColumn()),
            _UploadsOnly(DownloadColumn(binary_units=True)),
            _UploadsOnly(_BinarySpeed()),
            _UploadsOnly(TimeRemainingColumn()),
            console=console,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}
        self._waiting: TaskID | None = None

    def __enter__(self) -> RichReporter:
        # While bars are live, log lines must be drawn by the same console, above the bars;
        # the handler keeps the filters (secret redaction) of the one it stands in for.
        from rich.logging import RichHandler

        root = logging.getLogger()
        self._saved_handlers = root.handlers[:]
        handler = RichHandler(console=self.progress.console, show_path=False, markup=False,
                              rich_tracebacks=False, log_time_format="%H:%M:%S")
        for h in self._saved_handlers:
            handler.setLevel(h.level)
            for f in h.filters:
                handler.addFilter(f)
        root.handlers = [handler]
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
        logging.getLogger().handlers = self._saved_handlers

    def upload_started(self, name: str, total: int) -> None:
        self._tasks[name] = self.progress.add_task(f"upload {name}", total=total)

    def upload_progress(self, name: str, done: int, total: int) -> None:
        if name in self._tasks:
            self.progress.update(self._tasks[name], completed=done, total=total)

    def upload_finished(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            self.progress.remove_task(task)

    def outcome(self, outcome: Outcome) -> None:
        return None  # the executor logs every outcome, and log lines are drawn above the bars

    def waiting(self, waiting: Waiting) -> None:
        if not (waiting.transcodes or waiting.ingests):
            if self._waiting is not None:
                self.progress.remove_task(self._waiting)
                self._waiting = None
        elif self._waiting is None:
            self._waiting = self.progress.add_task(waiting.text(), total=None, waiting=True)
        else:
            self.progress.update(self._waiting, description=waiting.text())

    def notice(self, message: str) -> None:
        self.progress.console.print(message, style="bold yellow", markup=False)


class _BinarySpeed:
    """The upload rate in the units of the byte counts beside it and of the summary (MiB/s, not
    rich's decimal MB/s)."""

    def __call__(self, task: Any) -> Any:
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{human_bytes(speed)}/s", style="progress.data.speed")

    def get_table_column(self) -> Any:
        from rich.table import Column

        return Column()


class _UploadsOnly:
    """A progress column drawn for upload bars only (the waiting line has no bytes)."""

    def __init__(self, column: Any) -> None:
        self.column = column

    def __call__(self, task: Any) -> Any:
        from rich.text import Text

        return Text("") if task.fields.get("waiting") else self.column(task)

    def get_table_column(self) -> Any:
        return self.column.get_table_column()


class LogReporter:
    """Plain lines for logs: a start line per upload and a progress line every few seconds.

    It implements the executor's `Reporter` interface.
    """

    def __init__(self, every: float = 5.0, clock: Any = time.monotonic, stream: IO[str] | None = None) -> None:
        self.every = every
        self.stream = stream  # where notices go (default: stderr at the time)
        self.clock = clock
        self._started: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> LogReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def upload_started(self, name: str, total: int) -> None:
        now = self.clock()
        with self._lock:
            self._started[name] = self._last[name] = now
        log.info("upload %s: started, %s", name, human_bytes(total), extra={"item": name, "bytes": total})

    def upload_progress(self, name: str, done: int, total: int) -> None:
        now = self.clock()
        with self._lock:
            if now - self._last.get(name, now) < self.every:
                return
            self._last[name] = now
            elapsed = max(now - self._started.get(name, now), 1e-6)
        log.info("upload %s: %s of %s (%.0f%%, %s/s)", name, human_bytes(done), human_bytes(total),
                 100.0 * done / max(total, 1), human_bytes(done / elapsed), extra={"item": name, "bytes": done})

    def upload_finished(self, name: str) -> None:
        with self._lock:
            self._started.pop(name, None)
            self._last.pop(name, None)

    def outcome(self, outcome: Outcome) -> None:
        return None  # the executor already logs every outcome

    def waiting(self, waiting: Waiting) -> None:
        now = self.clock()
        with self._lock:
            if not (waiting.transcodes or waiting.ingests):
                self._last.pop(_WAITING, None)
                return
            if now - self._last.get(_WAITING, now - self.every) < self.every:
                return
            self._last[_WAITING] = now
        log.info("%s", waiting.text())

    def notice(self, message: str) -> None:
        print(message, file=self.stream or sys.stderr, flush=True)


_WAITING = "\0waiting"  # LogReporter's key for the waiting line's last time (no item has this name)


def reporter_for(console: Console) -> RichReporter | LogReporter:
    return RichReporter(console) if console.is_terminal else LogReporter()


def print_summary(result: Result, elapsed: float, console: Console, *, interrupted: bool = False) -> None:
    """The run's last lines. It says "interrupted" only when a stop left work undone (an upload
    stopped at a part boundary, items not started): a Ctrl-C after the last item had finished
    changes nothing, and the summary says so."""
    last: dict[str, Outcome] = {}
    for o in result.outcomes:  # an item may report twice (submitted, then ingested): the last word counts
        last[o.name] = o
    failed = [o for o in last.values() if not o.ok]
    parts = [f"{len(last) - len(failed)} item(s) succeeded", f"{len(failed)} failed"]
    if result.unsettled:
        parts.append(f"{len(result.unsettled)} still ingesting or transcoding at VOD (vodsync status shows them)")
    # The rate is over the uploads themselves: `elapsed` also holds planning and --wait's following.
    upload_s = result.upload_seconds
    rate = f" ({human_bytes(result.uploaded_bytes / upload_s)}/s)" if result.uploaded_bytes >= 1024 * 1024 and upload_s else ""
    moved = (f"{human_bytes(result.uploaded_bytes)} uploaded in {upload_s:.1f} s{rate}, "
             if result.uploaded_bytes else "nothing uploaded, ")
    if result.stopped:
        parts.append(f"{len(result.stopped)} upload(s) stopped at a part boundary")
    if result.not_started:
        parts.append(f"{len(result.not_started)} not started")
    if result.elsewhere:  # a shared state: another process holds them and carries them out
        parts.append(f"{len(result.elsewhere)} left to another process working on them")
    verdict = ("interrupted" if result.cut_short else "finished with failures" if failed else "complete")
    line = f"Apply {verdict}: {', '.join(parts)}; {moved}{elapsed:.1f} s in all."
    if result.cut_short:
        line += " The state is saved: run again to continue."
    elif interrupted:
        line += " (The interrupt came when nothing was left to stop.)"
    # soft_wrap: the terminal wraps the long line where it must, not rich at a width of its own.
    console.print(line, style="bold red" if failed or result.cut_short else "bold", markup=False, soft_wrap=True)
    for o in failed:
        console.print(f"  ✗ {o.name}: {o.message}", style="red", markup=False, soft_wrap=True)

