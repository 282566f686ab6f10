"""The command line: argument parsing, exit codes and wiring. No logic lives here.

Exit codes (a contract for scripts):
  0  success; for `plan --detailed-exitcode`, no changes
  1  an error, or `apply` finished with failed items
  2  `plan --detailed-exitcode`: there are changes (and only that: bad usage exits 1, as in Terraform)
  130  interrupted (Ctrl-C); the state is saved, the next run continues

Each command imports what it needs lazily, so `vodsync plan` on a large library
does not pay for the emulator, watchdog or the SDKs at start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from vodsync.emulator.cli import bounded  # argparse types (light: the emulator loads lazily)

if TYPE_CHECKING:
    from vodsync.cloud.settings import CloudSettings
    from vodsync.config import Config
    from vodsync.desired.items import DesiredItem, ManifestSet
    from vodsync.engine.executor import ExecOptions
    from vodsync.state.interface import Store
    from vodsync.state.location import StateLocation

log = logging.getLogger("vodsync")

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a command the pipe's reader left behind exits with
DEFAULT_CONFIG = "vodsync.yaml"
# OSS multipart limits: every part but the last at least 100 KiB, at most 5 GiB.
MIN_PART_SIZE, MAX_PART_SIZE = 100 * 1024, 5 * 1024**3
MAX_CONCURRENCY = 256  # as the config's `concurrency`


# ------------------------------------------------------------------ context


class Context:
    """Settings resolved once per command from flags, environment and the config file."""

    def __init__(self, args: argparse.Namespace) -> None:
        from vodsync.config import load_config
        from vodsync.desired.paths import default_roots

        self.args = args
        cfg_path = getattr(args, "config", None)
        # Without --config, load_config finds ./vodsync.yaml itself and marks it implicit.
        self.config: Config = load_config(Path(cfg_path) if cfg_path else None)
        manifests = getattr(args, "manifests", None)
        self.manifests = Path(manifests) if manifests else Path(self.config.manifests)
        (repository,) = default_roots(self.manifests)  # the manifests' checkout (or their folder)
        self._refuse_implicit_widening(repository)
        from vodsync.state.location import ENV_STATE, StateLocation

        state = getattr(args, "state", None) or os.environ.get(ENV_STATE)
        self.state = StateLocation.parse(state) if state else self._default_state(repository)
        self.roots = [Path(r) for r in self.config.roots or ()] or None

    def _default_state(self, repository: Path) -> StateLocation:
        from vodsync.state.location import StateLocation

        if self.config.source is not None:
            return StateLocation.parse(self.config.state)  # a path resolved against the config's folder, or a URL
        return StateLocation(path=self._default_state_file(repository))

    def _default_state_file(self, repository: Path) -> Path:
        """The config's `state`; without a config file, the state of the manifests' git repository
        (`.vodsync/state.db` at its top), so `vodsync plan -f ../manifests` from elsewhere in the
        checkout, or from outside it, finds the state that `apply` recorded instead of planning
        the whole library as new. Manifests outside any repository: `.vodsync/state.db` here."""
        here = Path(self.config.state)  # `.vodsync/state.db` in the working directory
        if not os.path.lexists(repository / ".git"):
            return here
        anchored = repository / ".vodsync" / "state.db"
        if not anchored.exists() and here.exists() and here.resolve() != anchored.resolve():
            # Before this default, the state was the working directory's: keep using one made so.
            logging.getLogger("vodsync.state").warning(
                "using the state file %s of the working directory; the default is now %s (move it there, "
                "or pass --state)", here, anchored)
            return here
        return anchored

    def open_state(self, *, readonly: bool = False) -> Store:
        """The state, opened (a PostgreSQL state with the config's `lease_seconds`)."""
        return self.state.open(readonly=readonly, lease_seconds=self.config.lease_seconds)

    def note_writer(self) -> None:
        """Say so when another process is applying to this state: what it is doing right now
        shows in a plan as interrupted, or still to do."""
        pid = self.state.writer_pid()
        if pid is not None:
            holder = f" (pid {pid})" if pid else ""
            logging.getLogger("vodsync.plan").warning(
                "another vodsync process%s is applying to this state now: items it is working on show "
                "here as interrupted or still to do", holder)

    def note_new_state(self) -> None:
        """Say so when there is no state file yet: every item is then planned as new (a wrong
        `--state`, or a state file left elsewhere, would otherwise pass unnoticed)."""
        if not self.state.exists():
            from vodsync.errors import display_path

            logging.getLogger("vodsync.state").info(
                "no state file at %s yet: every item is new to it", display_path(self.state.path))

    def _refuse_implicit_widening(self, repository: Path) -> None:
        from vodsync.config import refuse_implicit_widening
        from vodsync.desired.paths import repository_root

        repositories = [repository]
        source = self.config.source
        if source is not None and os.path.lexists(repository_root(source.parent) / ".git"):
            repositories.append(repository_root(source.parent))  # the checkout the config came with
        refuse_implicit_widening(self.config, repositories)

    def load_desired(self) -> list[DesiredItem]:
        return self.load_manifest_set().items

    def load_manifest_set(self) -> ManifestSet:
        from vodsync.desired.loader import load_manifest_set

        return load_manifest_set(self.manifests, roots=self.roots)

    def exec_options(self, **fields: Any) -> ExecOptions:
        """How the executor works: `fields`, plus the multipart tuning flags where given."""
        from vodsync.engine.executor import ExecOptions

        for name in ("part_size", "multipart_threshold"):
            if getattr(self.args, name, None):
                fields[name] = getattr(self.args, name)
        return ExecOptions(**fields)

    def cloud_settings(self, endpoint_override: str | None = None) -> CloudSettings:
        from vodsync.cloud.settings import CloudSettings
        from vodsync.config import resolve_credentials

        if endpoint_override:
            return CloudSettings("emulator", "emulator-secret", region=self._region(), endpoint=endpoint_override,
                                 api_limits=self.config.api_limits)
        creds = resolve_credentials(self.config)
        endpoint = (
            getattr(self.args, "endpoint", None) or os.environ.get("VODSYNC_ENDPOINT") or self.config.endpoint
        )
        return CloudSettings(
            creds.access_key_id, creds.access_key_secret, creds.security_token,
            region=self._region(), endpoint=endpoint, api_limits=self.config.api_limits,
        )

    def _region(self) -> str:
        return getattr(self.args, "region", None) or self.config.region

    @contextlib.contextmanager
    def cloud(self) -> Iterator[CloudSettings]:
        """Settings for VOD; with `--emulator`, an in-process emulator is started for the command."""
        if not getattr(self.args, "emulator", False):
            yield self.cloud_settings()
            return
        from vodsync.emulator import Emulator

        data_dir = self.state.local_dir / "emulator"
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        emu = Emulator(port=self.args.emulator_port, data_dir=str(data_dir), transcode_seconds=1,
                       url_job_seconds=1)
        try:
            emu.start()
        except OSError as err:
            from vodsync.errors import ConfigError

            raise ConfigError(
                f"cannot start the embedded emulator on port {self.args.emulator_port}: {err.strerror or err} "
                "(another one running? try --emulator-port 0)"
            ) from None
        try:
            seed = self.manifests / "emulator-seed"
            if seed.is_dir():  # <bucket>/<key> files the demo's url and register items point at
                emu.publish_directory(seed)
            print(f"vodsync: using the embedded emulator at {emu.url} (data in {data_dir})", file=sys.stderr)
            yield self.cloud_settings(endpoint_override=emu.url)
        finally:
            emu.stop()


def _client(settings: CloudSettings, store: Store) -> Any:
    from vodsync.engine.clients import vod_client

    return vod_client(settings, store)


# ----------------------------------------------------------------- commands


def cmd_plan(args: argparse.Namespace) -> int:
    from vodsync.engine.plan import error_json
    from vodsync.errors import VodsyncError

    try:
        return _plan(args)
    except VodsyncError as err:
        if args.json:  # a script reading stdout gets an answer it can parse; the words still go to stderr
            print(json.dumps(error_json(err), indent=2))
        raise


def _plan(args: argparse.Namespace) -> int:
    from vodsync.engine.plan import PlanOptions, plan_json
    from vodsync.engine.reconcile import build_plan
    from vodsync.ui import console_for, print_plan

    if args.json and args.format not in ("text", "json"):
        from vodsync.errors import ConfigError

        raise ConfigError(f"--json is --format json: it cannot be combined with --format {args.format}")
    ctx = Context(args)
    manifests = ctx.load_manifest_set()
    desired = manifests.items
    options = PlanOptions(prune=args.prune or ctx.config.prune, max_delete=_max_delete(args, ctx))
    lifecycle = {"moves": manifests.moves, "targets": _targets(args)}
    ctx.note_new_state()
    ctx.note_writer()
    with ctx.open_state(readonly=True) as store:
        records = store.records()
        if args.refresh:
            with ctx.cloud() as settings:
                plan = build_plan(desired, store, options, refresh_with=_client(settings, store), records=records,
                                  **lifecycle)
        else:
            plan = build_plan(desired, store, options, records=records, **lifecycle)
    if args.json or args.format == "json":
        print(json.dumps(plan_json(plan), indent=2))
    elif args.format == "markdown":
        from vodsync.ui import render_markdown

        print(render_markdown(plan))
    else:
        print_plan(plan, console_for(sys.stdout))
    if plan.refusal:
        return EXIT_ERROR
    if args.out:
        _save_plan(args, ctx, plan, manifests, records, options)
    return EXIT_CHANGES if args.detailed_exitcode and plan.has_changes else EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    from vodsync.engine.executor import Executor
    from vodsync.engine.ownership import state_namespace
    from vodsync.engine.plan import PlanOptions
    from vodsync.engine.reconcile import apply, build_plan
    from vodsync.ui import console_for, print_plan, print_summary, reporter_for

    if args.plan_file:
        _check_plan_file(Path(args.plan_file))  # before anything else: a wrong path is the first thing to say
    ctx = Context(args)
    manifests = ctx.load_manifest_set()
    desired = manifests.items
    out = console_for(sys.stdout)
    ctx.note_new_state()
    options = PlanOptions(prune=args.prune or ctx.config.prune, max_delete=_max_delete(args, ctx))
    with ctx.open_state() as store, ctx.cloud() as settings:
        state_namespace(store, ctx.config.namespace)
        client = _client(settings, store)
        if args.plan_file:  # exactly the saved plan, or nothing (`engine/saved_plan.py`)
            plan = _saved_plan(args, ctx, manifests, store)
        else:
            plan = build_plan(desired, store, options, refresh_with=client if args.refresh else None,
                              remember_hashes=True, moves=manifests.moves, targets=_targets(args))
        print_plan(plan, out)
        if plan.refusal:
            return EXIT_ERROR
        if not plan.actions and not _has_async_work(store):
            return EXIT_OK
        reviewed = bool(args.plan_file)  # as Terraform: a saved plan was reviewed; no second question
        if plan.has_changes and not args.yes and not reviewed:
            if sys.stdin is None or not sys.stdin.isatty():  # no stdin at all (a closed fd 0) is no terminal
                print("vodsync: error: refusing to apply without confirmation: pass --yes", file=sys.stderr)
                return EXIT_ERROR
            if not _confirm():
                print("Nothing applied.", file=sys.stderr)
                return EXIT_ERROR
        exec_options = ctx.exec_options(concurrency=args.concurrency or ctx.config.concurrency, wait=args.wait)
        started = time.monotonic()
        with reporter_for(out) as reporter:
            executor = Executor(store, client, checkpoint_dir=store.checkpoint_dir, options=exec_options,
                                reporter=reporter)
            with _ctrl_c_stops(executor.stopping, reporter) as interrupted:
                result = apply(plan, store, client, options=exec_options, executor=executor)
        print_summary(result, time.monotonic() - started, out, interrupted=interrupted.is_set())
    if interrupted.is_set():
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_ERROR


INTERRUPT_MESSAGE = "Interrupt received: stopping at the next part boundary (Ctrl-C again to stop now)"


@contextlib.contextmanager
def _ctrl_c_stops(stopping: threading.Event, reporter: Any) -> Iterator[threading.Event]:
    """Ctrl-C as in Terraform: the first stops new work and makes running multipart uploads stop
    at their next part boundary (the executor's `stopping`), and says so at once; the second
    exits at once. Yields the event that says whether an interrupt came.

    A Python signal handler runs only when the main thread is back between two bytecodes, which
    a busy run may delay. So the C-level handler's wake-up byte (`signal.set_wakeup_fd`) is read
    by a thread of this function, which reacts at once: it sets `stopping`, prints the notice
    through the reporter (on a terminal, above the progress bars) and, on the second Ctrl-C,
    exits. The Python-level handler does nothing but keep KeyboardInterrupt out.
    """
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # embedded: signals are not ours
        yield received
        return
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)

    def react() -> None:
        while data := os.read(wake_read, 64):  # b"" once the pipe is closed: the run is over
            for signum in data:
                if signum != signal.SIGINT:
                    continue
                if received.is_set():
                    _exit_now()
                received.set()
                stopping.set()
                reporter.notice(INTERRUPT_MESSAGE)

    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    previous_fd = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    thread = threading.Thread(target=react, name="vodsync-interrupt", daemon=True)
    thread.start()
    try:
        yield received
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous)
        os.close(wake_write)
        thread.join()
        os.close(wake_read)


def _exit_now() -> None:
    """The second Ctrl-C: exit 130 at once. The state file is as safe as after `kill -9` (every
    intent is written before its call); the next run settles what this one left under way."""
    with contextlib.suppress(OSError, ValueError):
        if sys.stdout.isatty():
            os.write(sys.stdout.fileno(), b"\x1b[?25h\n")  # the progress bars hid the cursor
        os.write(sys.stderr.fileno(), b"vodsync: stopped now; state is saved, run again to continue.\n")
    os._exit(EXIT_INTERRUPTED)


def _targets(args: argparse.Namespace) -> Any:
    from vodsync.engine.targets import Targets

    return Targets.of(args.target, args.exclude)


def _save_plan(args: argparse.Namespace, ctx: Context, plan: Any, manifests: ManifestSet,
               records: Any, options: Any) -> None:
    from vodsync import __version__
    from vodsync.engine.saved_plan import inputs_of, write_plan

    inputs = inputs_of(ctx.manifests, ctx.state, manifests, records)
    flags = {"prune": options.prune, "max_delete": options.max_delete, "refresh": bool(args.refresh),
             "target": list(args.target or ()), "exclude": list(args.exclude or ())}
    write_plan(Path(args.out), plan, inputs, flags, __version__)
    print(f"Saved the plan to {args.out}; `vodsync apply {args.out}` carries out exactly this plan.",
          file=sys.stderr)


def _check_plan_file(path: Path) -> None:
    from vodsync.engine.saved_plan import SavedPlanError

    if path.is_dir():
        raise SavedPlanError(f"{path} is a directory, not a saved plan: to apply the manifests in it, "
                             f"use `vodsync apply -f {path}`")
    if not path.exists():
        raise SavedPlanError(f"no plan file {path}: make one with `vodsync plan -out {path}`")


def _saved_plan(args: argparse.Namespace, ctx: Context, manifests: ManifestSet, store: Any) -> Any:
    from vodsync.engine.saved_plan import check_inputs, inputs_of, read_plan, rebuild_plan
    from vodsync.errors import ConfigError

    given = [flag for flag, on in (("--prune", args.prune), ("--refresh", args.refresh), ("--target", args.target),
                                   ("--exclude", args.exclude), ("--max-delete", args.max_delete is not None)) if on]
    if given:
        raise ConfigError(f"{', '.join(given)} cannot be combined with a plan file: the saved plan fixes what is "
                          "applied (make the plan with those options instead)")
    path = Path(args.plan_file)
    doc = read_plan(path)
    records = store.records()
    check_inputs(doc, path, inputs_of(ctx.manifests, ctx.state, manifests, records))
    return rebuild_plan(doc, manifests.items, records)


def _has_async_work(store: Any) -> bool:
    from vodsync.state.store import RecordStatus

    # A pruned item whose URL job was already downloading waits (DELETING) for the job to deliver.
    waiting = store.records(statuses=(RecordStatus.INGESTING, RecordStatus.PROCESSING, RecordStatus.DELETING))
    return any(r.status is not RecordStatus.DELETING or r.job_id for r in waiting.values())


def _confirm() -> bool:
    try:
        return input("Apply these changes? [y/N] ").strip().lower() in ("y", "yes")
    except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the question: a no
        print(file=sys.stderr)
        return False


def _max_delete(args: argparse.Namespace, ctx: Context) -> int:
    return args.max_delete if args.max_delete is not None else ctx.config.max_delete


def cmd_status(args: argparse.Namespace) -> int:
    from vodsync.ui import console_for

    ctx = Context(args)
    with ctx.open_state(readonly=True) as store:
        records = sorted(store.records().values(), key=lambda r: r.name)
    rows = [
        {
            "name": r.name, "kind": str(r.kind), "status": str(r.status), "remote_id": r.remote_id,
            "remote_status": r.remote_status, "job_id": r.job_id, "last_result": r.last_result,
            "protect": r.protect, "origin": r.origin, "source": r.source,
        }
        for r in records
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    out = console_for(sys.stdout)
    if not rows:
        out.print(f"No items recorded in {ctx.state}.", markup=False)
        return EXIT_OK
    for r in rows:  # a drop-folder item is named by its content's digest: say which file it was
        if str(r["origin"]).startswith("drop:") and r["source"]:
            r["name"] = f"{r['name']} ({os.path.basename(r['source'])})"
    width = max(len(r["name"]) for r in rows)
    out.print(f"{'NAME':<{width}}  {'KIND':<8}  {'STATUS':<10}  {'REMOTE ID':<32}  {'VOD STATUS':<12}  LAST RESULT",
              style="bold", markup=False)
    for r in rows:
        out.print(
            f"{r['name']:<{width}}  {r['kind']:<8}  {r['status']:<10}  {r['remote_id'] or r['job_id'] or '-':<32}  "
            f"{r['remote_status'] or '-':<12}  {r['last_result'] or ''}", markup=False,
        )
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    ctx = Context(args)
    items = ctx.load_desired()
    files = len({i.origin.file for i in items if i.origin})
    print(f"{len(items)} item(s) in {files} manifest file(s) under {ctx.manifests} are valid.")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from vodsync.desired.loader import manifest_schema

    print(json.dumps(manifest_schema(), indent=2))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    from vodsync.daemon.loop import serve

    return serve(Context(args))


def cmd_gc(args: argparse.Namespace) -> int:
    from vodsync.engine.gc import run_gc
    from vodsync.engine.ownership import state_namespace

    ctx = Context(args)
    with ctx.open_state() as store, ctx.cloud() as settings:
        namespace = state_namespace(store, ctx.config.namespace)
        return run_gc(store, _client(settings, store), yes=args.yes, out=sys.stdout, namespace=namespace)


def cmd_import(args: argparse.Namespace) -> int:
    from vodsync.engine.imports import import_media
    from vodsync.errors import ConfigError

    problem = _import_usage_problem(args)
    if problem:
        print(args.usage(), end="", file=sys.stderr)
        print(f"vodsync import: error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    if args.discover:
        return _discover(args)
    ctx = Context(args)
    item = next((i for i in ctx.load_desired() if i.name == args.name), None)
    if item is None:
        raise ConfigError(f"{args.name} is not an item of the manifests under {ctx.manifests}; "
                          "declare it first (import records existing media as a declared item)")
    with ctx.open_state() as store, ctx.cloud() as settings:
        record = import_media(store, _client(settings, store), item, args.media_id)
    print(f"Imported {record.name} as {record.kind} {record.remote_id} ({record.last_result}). "
          "No write call was made; `vodsync plan` shows what differs from the manifest.")
    return EXIT_OK


def _import_usage_problem(args: argparse.Namespace) -> str | None:
    """`import NAME MEDIA_ID` and `import --discover [--namespace NS]` take different arguments."""
    if args.discover:
        if args.name is not None:
            return "--discover finds every item's media itself: give no NAME or MEDIA_ID with it"
        return None
    if args.namespace is not None:
        return "--namespace goes with --discover"
    if args.name is None or args.media_id is None:
        return "give NAME and MEDIA_ID (the manifest item and its media's ID), or --discover"
    return None


def _discover(args: argparse.Namespace) -> int:
    from vodsync.engine.imports import discover

    ctx = Context(args)
    desired = ctx.load_desired()
    with ctx.open_state() as store, ctx.cloud() as settings:
        found = discover(store, _client(settings, store), desired, namespace=args.namespace, pinned=ctx.config.namespace)
    print(f"Discovering in namespace {found.namespace.value}:")
    for record in found.found:
        print(f"  found      {record.name}: {record.kind} {record.remote_id} ({record.last_result})")
    for name, why in found.missing:
        print(f"  not found  {name}: {why}")
    kept = f"; {len(found.kept)} already recorded, left as they are" if found.kept else ""
    print(f"Recorded {len(found.found)} of {len(found.found) + len(found.missing)} items{kept}. "
          "No write call was made; `vodsync plan` shows what remains to do.")
    return EXIT_OK


def cmd_state_list(args: argparse.Namespace) -> int:

    with Context(args).open_state(readonly=True) as store:
        records = sorted(store.records().values(), key=lambda r: r.name)
    if args.json:
        print(json.dumps([{"name": r.name, "kind": r.kind, "status": str(r.status), "remote_id": r.remote_id}
                          for r in records], indent=2))
    else:
        for r in records:
            print(r.name)
    return EXIT_OK


def cmd_state_show(args: argparse.Namespace) -> int:
    from vodsync.engine.state_ops import record_view
    from vodsync.errors import StateError

    ctx = Context(args)
    if args.namespace:
        return _show_namespace(ctx, args)
    if args.name is None:
        print(args.usage(), end="", file=sys.stderr)
        print("vodsync state show: error: give NAME, or --namespace", file=sys.stderr)
        return EXIT_ERROR
    with ctx.open_state(readonly=True) as store:
        record = store.get(args.name)
    if record is None:
        raise StateError(f"{args.name} is not recorded in {ctx.state} (`vodsync state list` shows what is)")
    view = record_view(record)
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        for key, value in view.items():
            if value not in (None, {}, (), "") or key in ("remote_id", "status"):
                if key.endswith("_at") and isinstance(value, int | float) and value:  # epoch seconds
                    shown: Any = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(value))
                elif isinstance(value, str | int | float | bool) or value is None:
                    shown = value
                else:
                    shown = json.dumps(value)
                print(f"{key + ':':<16}{shown}")
    return EXIT_OK


def _show_namespace(ctx: Context, args: argparse.Namespace) -> int:
    """`state show --namespace`: the namespace the state's ReferenceIds and markers derive from."""
    from vodsync.engine.ownership import NAMESPACE_KEY, recorded_namespace
    from vodsync.errors import StateError

    if args.name is not None:
        raise StateError("state show --namespace takes no NAME (the namespace is the whole state's)")
    if not ctx.state.exists():
        raise StateError(f"no state file at {ctx.state}")
    with ctx.open_state(readonly=True) as store:
        if store.get_meta(NAMESPACE_KEY) is None and not store.records():
            raise StateError(f"{ctx.state} has no namespace yet (the first apply, gc or import --discover "
                             "records one)")
        namespace = recorded_namespace(store).value
    print(json.dumps({"namespace": namespace}) if args.json else namespace)
    return EXIT_OK


def cmd_state_rm(args: argparse.Namespace) -> int:
    from vodsync.engine.state_ops import forget

    ctx = Context(args)
    with ctx.open_state() as store:
        results = forget(store, args.names)
    code = EXIT_OK
    for f in results:
        if f.record is None:
            print(f"vodsync: error: {f.name} is not recorded in {ctx.state}", file=sys.stderr)
            code = EXIT_ERROR
            continue
        print(f"Forgot {f.name} ({f.record.kind} {f.record.remote_id or '(no media)'}); the media is left untouched.")
        if f.warning:
            print(f"vodsync: warning: {f.name}: {f.warning}", file=sys.stderr)
    return code


def cmd_state_mv(args: argparse.Namespace) -> int:
    from vodsync.engine.moves import rekey

    with Context(args).open_state() as store:
        record = rekey(store, args.old, args.new)
    print(f"Moved {args.old} → {args.new} ({record.kind} {record.remote_id or '(no media)'} kept).")
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    from vodsync.completion import completion_script

    print(completion_script(build_parser(), args.shell), end="")
    return EXIT_OK


def _cmd_emulator(args: argparse.Namespace) -> int:
    from vodsync.emulator.cli import run

    return run(args)


# ------------------------------------------------------------------- parser


def _add_upload_tuning(p: argparse.ArgumentParser) -> None:
    """OSS multipart tuning (also what lets tests interrupt an upload between parts)."""
    p.add_argument("--part-size", metavar="BYTES",
                   type=bounded(int, MIN_PART_SIZE, MAX_PART_SIZE, why="OSS parts are 100 KiB to 5 GiB"),
                   help="multipart part size (default: 8-32 MiB, one part per upload thread; OSS minimum 100 KiB)")
    p.add_argument("--multipart-threshold", type=bounded(int, 1), metavar="BYTES",
                   help="files this large or larger are uploaded in parts, resumably (default 16 MiB)")


def _add_common(p: argparse.ArgumentParser, *, manifests: bool = True, cloud: bool = True) -> None:
    p.add_argument("--config", metavar="FILE", help=f"config file (default: ./{DEFAULT_CONFIG} if present)")
    if manifests:
        p.add_argument("-f", "--manifests", metavar="DIR", help="manifest directory (default: manifests)")
    p.add_argument("--state", metavar="FILE|URL", help="state file, or postgresql://USER@HOST:PORT/DB for a state shared by many hosts (env VODSYNC_STATE; default: .vodsync/state.db at the top of the manifests' git checkout, else here)")
    if cloud:
        p.add_argument("--region", help="VOD region (default: cn-shanghai)")
        p.add_argument("--endpoint", metavar="URL", help="VOD endpoint, e.g. the emulator (env VODSYNC_ENDPOINT)")
        p.add_argument("--emulator", action="store_true", help="run against an embedded, in-process emulator")
        p.add_argument("--emulator-port", type=bounded(int, 0, 65535), default=9090, metavar="PORT",
                       help="port of the embedded emulator (default 9090; 0 picks a free one)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="auto", choices=["auto", "text", "json"],
                   help="log lines on stderr (default auto: text, except JSON for `watch` without a terminal)")


def _add_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prune", action="store_true", help="delete media whose items left the manifests")
    p.add_argument("--max-delete", type=bounded(int, 0), metavar="N", help="refuse a run that would delete more (default 10)")
    p.add_argument("--refresh", action="store_true", help="read the remote media and plan fixes for drift")
    p.add_argument("--target", action="append", metavar="PATTERN",
                   help="plan only items whose name matches this glob (repeatable); pruning too")
    p.add_argument("--exclude", action="append", metavar="PATTERN",
                   help="leave out items whose name matches this glob (repeatable)")


class _Parser(argparse.ArgumentParser):
    """argparse without prefix abbreviations (`--pr` is not `--prune`), and whose usage errors exit 1:
    exit 2 is what `plan --detailed-exitcode` says about changes. Subcommands get the same class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """As argparse, but an unknown flag is reported by the command it was given to, with the
        flag it was probably meant to be (`--concurency` -> `--concurrency`)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            from vodsync.cli_help import subparsers_of
            from vodsync.config import closest

            command = subparsers_of(self).get(getattr(parsed, "command", None) or "", self)
            message = f"unrecognized arguments: {' '.join(extras)}"
            flags = [o[2:] for a in command._actions for o in a.option_strings if o.startswith("--")]  # noqa: SLF001
            hint = next((h for e in extras if e.startswith("--") and (h := closest(e[2:].split("=")[0], flags))),
                        None)
            command.error(f"{message}; did you mean --{hint}?" if hint else message)
        return parsed


def build_parser() -> argparse.ArgumentParser:
    from vodsync import __version__

    parser = _Parser(
        prog="vodsync",
        description="Keep an ApsaraVideo VOD account in the state your manifests and drop folders describe.",
        epilog="examples:\n  vodsync apply -f manifests --emulator --yes   (try it, no account needed)\n"
               "  vodsync plan -f manifests\n  vodsync COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vodsync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plan", help="show what apply would change (no write calls)")
    _add_common(p)
    _add_policy(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0: no changes, 2: changes, 1: error")
    p.add_argument("--format", choices=["text", "json", "markdown"], default="text",
                   help="text (default), json (as --json), or markdown for a pull-request comment")
    p.add_argument("-out", "--out", dest="out", metavar="FILE",
                   help="also save the plan to FILE, for `vodsync apply FILE`")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="make VOD match the manifests")
    _add_common(p)
    _add_policy(p)
    p.add_argument("--concurrency", type=bounded(int, 1, MAX_CONCURRENCY), metavar="N", help="items worked on at once (default 4)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--wait", type=bounded(float, 0), default=300.0, metavar="SECONDS",
                   help="follow URL ingests and transcoding this long before returning (default 300)")
    _add_upload_tuning(p)
    p.add_argument("plan_file", nargs="?", metavar="PLAN_FILE",
                   help="apply exactly this saved plan (`vodsync plan -out FILE`), refused if anything changed")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("status", help="every recorded item with its remote ID, status and last result")
    _add_common(p, manifests=False, cloud=False)
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("validate", help="check manifests and the files they name (no network)")
    _add_common(p, cloud=False)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of a manifest file")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("watch", help="run as a daemon: watch manifests and drop folders, reconcile on change")
    _add_common(p)
    p.add_argument("--interval", type=bounded(float, 0, above=True), metavar="SECONDS",
                   help="full reconcile at least this often (default: config daemon.interval_seconds, 600)")
    p.add_argument("--http", metavar="HOST:PORT", help="serve /healthz and /metrics here (loopback; off by default)")
    p.add_argument("--prune", action="store_true", help="delete media whose items left the manifests")
    p.add_argument("--once", action="store_true", help="one reconcile pass (drop folders included), then exit")
    _add_upload_tuning(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("gc", help="find (and with --yes remove) what interrupted runs left behind")
    _add_common(p, manifests=False)
    p.add_argument("--yes", "-y", action="store_true", help="remove what was found (default: only list it)")
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("import", help="record existing media as a manifest item (no write call)")
    _add_common(p)
    p.add_argument("name", nargs="?", metavar="NAME", help="the manifest item the media becomes")
    p.add_argument("media_id", nargs="?", metavar="MEDIA_ID", help="its VideoId, ImageId or MediaId")
    p.add_argument("--discover", action="store_true",
                   help="rebuild a lost state: find the media this state's namespace made for every item")
    p.add_argument("--namespace", metavar="NS",
                   help="with --discover: adopt this namespace's media (when several match)")
    p.set_defaults(func=cmd_import, usage=p.format_usage)

    p = sub.add_parser("state", help="look at and repair the state file (list, show, rm, mv)")
    state = p.add_subparsers(dest="state_command", metavar="SUBCOMMAND", required=True)
    for name, func, words in (
        ("list", cmd_state_list, "every recorded item, one name per line"),
        ("show", cmd_state_show, "one item's record (no secrets)"),
        ("rm", cmd_state_rm, "forget items; their media is left untouched in VOD"),
        ("mv", cmd_state_mv, "rename a recorded item; its media and ID are kept"),
    ):
        q = state.add_parser(name, help=words)
        _add_common(q, manifests=False, cloud=False)
        q.set_defaults(func=func)
        if name == "list":
            q.add_argument("--json", action="store_true", help="name, kind, status and remote ID of each, as JSON")
        elif name == "show":
            q.add_argument("name", nargs="?", metavar="NAME")
            q.add_argument("--json", action="store_true", help="the record as JSON")
            q.add_argument("--namespace", action="store_true",
                           help="print the state's namespace (its ReferenceIds and markers derive from it)")
            q.set_defaults(usage=q.format_usage)
        elif name == "rm":
            q.add_argument("names", nargs="+", metavar="NAME")
        else:
            q.add_argument("old", metavar="OLD")
            q.add_argument("new", metavar="NEW")

    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh or fish)")
    p.add_argument("shell", choices=["bash", "zsh", "fish"], metavar="{bash,zsh,fish}",
                   help="the shell to complete for")
    p.set_defaults(func=cmd_completion)

    from vodsync.emulator.cli import add_arguments as add_emulator_arguments

    p = sub.add_parser("emulator", help="run a local VOD + OSS emulator that the real SDKs talk to")
    add_emulator_arguments(p)
    p.set_defaults(func=_cmd_emulator)
    from vodsync.cli_help import add_descriptions_and_examples

    add_descriptions_and_examples(sub)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = getattr(logging, str(getattr(args, "log_level", "info")).upper(), logging.INFO)
    try:
        from vodsync.logs import setup_logging
    except ImportError:  # pragma: no cover - during bootstrap
        logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(message)s")
        return
    setup_logging(level, _log_format(args), sys.stderr)


def _log_format(args: argparse.Namespace) -> str:
    """`auto` means JSON only for `watch` without a terminal (journald, a log collector); the other
    commands are run by a person or a CI log, which read text."""
    fmt = str(getattr(args, "log_format", "auto"))
    return "text" if fmt == "auto" and args.command != "watch" else fmt


def run() -> None:
    """The `vodsync` process: `main()`, then exit without tearing the interpreter down.

    Freeing the SDKs' module state at exit took 0.1-0.15 s of every command (oss2 alone
    ~70 ms) and does nothing a finished command needs: the state is committed and its file
    closed by then. Log handlers and the standard streams are flushed first. (`main` itself
    returns normally, so tests and embedders can call it.)
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`vodsync plan | head`)
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    from vodsync.errors import VodsyncError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error (exit 1: see _Parser)
        return done.code if isinstance(done.code, int) else EXIT_ERROR
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    if args.command not in ("emulator", "schema"):
        _setup_logging(args)
    try:
        return int(args.func(args) or 0)
    except VodsyncError as err:
        print(f"vodsync: error: {err.message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("vodsync: interrupted; state is saved, run again to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`vodsync status | head`): stop quietly, as a command killed by
        # SIGPIPE does. Whatever is still buffered for stdout has nowhere to go.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
