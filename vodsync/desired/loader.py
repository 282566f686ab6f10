"""Manifest files -> validated, path-confined `DesiredItem`s, or one `ManifestError` listing every problem.

Owns finding manifest files (`*.yaml`/`*.yml`, recursively, skipping hidden
directories), parsing them, merging `defaults`, validating against
`manifest.py`'s models, confining and stat-ing local files, checking that names
are unique across all files, and `manifest_schema()`.

Speed: a plan over 100,000 items must cost at most about twice a bare
`yaml.load(CSafeLoader)` plus one `os.stat` per file. So the happy path is the
C parser, one pydantic call for a whole file's media list, a directory-cached
`realpath`, and one `lstat` per local file. The YAML node tree the parser
builds anyway is kept for the file being loaded, so line numbers for problems
(and each item's origin line) come from it without parsing again. Errors are
located and worded only on the slow path.

Nothing here reads a media file's bytes, and no exception other than
`ManifestError` escapes for any manifest content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import stat
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vodsync.config import closest, describe_value, explain_error, unknown_field_words
from vodsync.desired.hls import is_playlist, read_segment_names
from vodsync.desired.items import UPDATABLE_FIELDS, DesiredItem, Kind, LocalFile, ManifestSet, Move, Segment
from vodsync.desired.manifest import (
    DEFAULTABLE,
    ITEM_ADAPTER,
    ITEM_MODELS,
    ITEM_TYPES,
    ITEMS_ADAPTER,
    MOVED_ADAPTER,
    ManifestDefaults,
    ManifestFile,
)
from vodsync.desired.paths import PathConfiner, default_roots
from vodsync.errors import (
    Location,
    ManifestError,
    ManifestProblem,
    PathNotAllowed,
    VodsyncError,
    display_path,
)
from vodsync.logs import redact_url_userinfo
from vodsync.yamldoc import node_at, node_line, parse_yaml_document, yaml_error_words

MANIFEST_SUFFIXES = (".yaml", ".yml")
_TOP_LEVEL = ("defaults", "media", "moved")
_OPTION_FIELDS = (
    "template_group_id",
    "workflow_id",
    "storage_location",
    "app_id",
    "image_type",
    "business_type",
    "file_extension",
    "on_delete",
)
_EXPECTED = {
    "tags": "a list of strings",
    "cate_id": "a positive integer",
    "protect": "true or false",
    "defaults": "a mapping",
}
_PATTERNS = {
    "name": "must use only lower-case letters, digits and . _ / - and start with a letter or digit",
    "from": "an item name: lower-case letters, digits and . _ / -, starting with a letter or digit",
    "to": "an item name: lower-case letters, digits and . _ / -, starting with a letter or digit",
    "tags": "a tag must not contain a comma (the API joins tags with commas)",
    "file": "must not contain NUL bytes",
    "file_extension": "must be letters and digits only, such as mp4",
    "template_group_id": "must not contain spaces",
    "workflow_id": "must not contain spaces",
    "storage_location": "must not contain spaces",
    "app_id": "must not contain spaces",
}
_TYPE_LIST = ", ".join(ITEM_TYPES)
# Per kind, the creation options its model has (getattr of a missing attribute is slow on pydantic models).
_OPTIONS_OF = {
    Kind(t): tuple(f for f in _OPTION_FIELDS if f in m.model_fields) for t, m in ITEM_MODELS.items()
}


def load_manifests(
    root: Path,
    *,
    roots: Sequence[Path] | None = None,
    check_files: bool = True,
) -> list[DesiredItem]:
    """Load every manifest under `root` (a directory, or one file) into items sorted by name.

    Local files are resolved relative to their manifest, must lie inside `roots`
    (default: the manifests' repository root, see `paths.py`), and are stat-ed
    (never read) unless `check_files` is false, in which case `local` is None and
    missing files are not reported. Raises `ManifestError` listing every problem
    of every file.
    """
    return load_manifest_set(root, roots=roots, check_files=check_files).items


def load_manifest_set(
    root: Path,
    *,
    roots: Sequence[Path] | None = None,
    check_files: bool = True,
) -> ManifestSet:
    """`load_manifests`, plus the files' `moved:` entries (renames), checked against the items."""
    with cyclic_gc_paused():
        reader = ManifestReader(Path(root), roots, check_files=check_files)
        problems: list[ManifestProblem] = []
        files = [reader.read(path) for path in reader.files(problems)]
        for one in files:
            problems.extend(one.problems)
        problems.extend(cross_file_problems(files))
        if problems:
            raise manifest_error(problems)
        items = [item for one in files for item in one.items]
        items.sort(key=lambda item: item.name)
        return ManifestSet(items, [m for one in files for m in one.moves])


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during a bulk load.

    Loading allocates millions of small acyclic objects (YAML nodes, dicts,
    items); each allocation burst triggers collections that rescan every live
    object, which made a 100,000-item load up to ~2x slower. Reference counting
    still frees everything; the collector resumes (if it was on) afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclasses.dataclass(frozen=True)
class FileManifest:
    """One manifest file, read on its own: its items, every name it defines (valid items or not,
    for the uniqueness check), its `moved:` entries and its own problems. The checks across files
    (`cross_file_problems`) come on top."""

    path: Path
    rel: str  # as problems name it
    items: list[DesiredItem]
    names: list[tuple[str, Location]]
    moves: list[Move]
    problems: list[ManifestProblem]


class ManifestReader:
    """Finds and reads the manifest files under one root, one file at a time.

    `load_manifest_set` reads them all; the daemon (`vodsync.daemon.manifests`) keeps each file's
    `FileManifest` and reads again only the files that changed."""

    def __init__(self, root: Path, roots: Sequence[Path] | None = None, *, check_files: bool = True) -> None:
        self.root = root
        self.check_files = check_files
        base = root if root.is_dir() else root.parent
        allowed = list(roots) if roots else default_roots(root)
        self.confiner = PathConfiner(allowed)
        # Manifest files themselves may live in the manifests directory or the roots, but a
        # symlinked manifest must not pull in (and echo in errors) a YAML file from elsewhere.
        self.manifest_confiner = PathConfiner([base, *allowed])

    def files(self, problems: list[ManifestProblem]) -> list[Path]:
        """The manifest files under the root; a missing root or an unreadable directory is a problem."""
        return _manifest_files(self.root, problems)

    def read(self, path: Path) -> FileManifest:
        rel = display_path(path)  # in errors: a path the user can open from where they ran vodsync
        items: list[DesiredItem] = []
        names: list[tuple[str, Location]] = []
        problems: list[ManifestProblem] = []
        if not self.manifest_confiner.allows(os.path.realpath(path)):
            problems.append(
                ManifestProblem(
                    Location(rel, 1),
                    None,
                    f"manifest resolves to {os.path.realpath(path)}, outside the manifests directory and "
                    f"the allowed roots ({self.manifest_confiner.describe_roots()})",
                )
            )
            return FileManifest(path, rel, items, names, [], problems)
        loader = _ManifestFileLoader(path, rel, self.confiner, self.check_files, problems)
        loader.load(items, names)
        return FileManifest(path, rel, items, names, loader.moves, problems)


def cross_file_problems(files: Sequence[FileManifest], counts: Mapping[str, int] | None = None) -> list[ManifestProblem]:
    """What no file shows on its own: a name defined twice, a `moved:` that clashes with an item.

    `counts` (how often each name is defined, which the daemon keeps up to date file by file)
    spares a pass over every name: only the places of duplicated names are gathered."""
    if counts is None:
        counts = name_counts(files)
    problems: list[ManifestProblem] = []
    twice = {name for name, n in counts.items() if n > 1}
    if twice:
        _check_unique([entry for one in files for entry in one.names if entry[0] in twice], problems)
    _check_moves([m for one in files for m in one.moves], counts, problems)
    return problems


def name_counts(files: Iterable[FileManifest]) -> Counter[str]:
    """How often each name is defined across `files`."""
    return Counter(name for one in files for name, _ in one.names)


def manifest_error(problems: Sequence[ManifestProblem]) -> ManifestError:
    """Every problem once (the same mistake repeated in one place is said once), by file and line."""
    seen: set[str] = set()
    unique = [p for p in problems if not (str(p) in seen or seen.add(str(p)))]
    unique.sort(key=lambda p: (p.location.file, p.location.line or 0))
    return ManifestError(unique)


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of one manifest file, for `vodsync schema` and editors."""
    schema = ManifestFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vodsync manifest"
    schema["description"] = (
        "A vodsync manifest: optional `defaults` applied to every item of the file, "
        "and a `media` list of items selected by `type`."
    )
    return schema


def _manifest_files(root: Path, problems: list[ManifestProblem]) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        problems.append(ManifestProblem(Location(display_path(root)), None, "no such manifests directory or file"))
        return []
    found: list[Path] = []

    def unreadable(exc: OSError) -> None:
        where = display_path(exc.filename or root)
        problems.append(
            ManifestProblem(Location(where, 1), None, f"cannot list directory: {exc.strerror or exc}")
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        # Hidden directories hold tooling (.git, .vodsync), not manifests.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(dirpath, f)
            for f in sorted(filenames)
            if f.endswith(MANIFEST_SUFFIXES) and not f.startswith(".")
        )
    return found


# How many places a duplicate-name problem lists; the rest are counted.
DUPLICATE_PLACES_SHOWN = 3


def _check_unique(names: list[tuple[str, Location]], problems: list[ManifestProblem]) -> None:
    """Each duplicated name is reported once per file it is in, with a count and a few places.

    Linear in the number of names: 8,000 copies of one item in a file are one problem,
    not 8,000 problems each naming the 7,999 others. One per file, so that the daemon
    leaves out every file that defines the name (`vodsync.daemon.manifests`).
    """
    counts: dict[str, int] = {}
    first_few: dict[str, list[Location]] = {}
    first_in_file: dict[str, dict[str, Location]] = {}
    for name, location in names:
        counts[name] = counts.get(name, 0) + 1
        shown = first_few.setdefault(name, [])
        if len(shown) <= DUPLICATE_PLACES_SHOWN:
            shown.append(location)
        first_in_file.setdefault(name, {}).setdefault(location.file, location)
    for name, count in counts.items():
        if count < 2:
            continue
        for here in first_in_file[name].values():
            others = [o for o in first_few[name] if o is not here][:DUPLICATE_PLACES_SHOWN]
            more = count - 1 - len(others)
            places = ", ".join(str(o) for o in others) + (f" and {more} more" if more else "")
            problems.append(
                ManifestProblem(
                    here, name, f"duplicate name {name!r}: defined {count} times, also at {places}"
                )
            )


def _check_moves(moves: list[Move], names: Container[str], problems: list[ManifestProblem]) -> None:
    """A rename names each old and each new name once, and its old name is no longer an item."""
    seen_old: dict[str, Location] = {}
    seen_new: dict[str, Location] = {}
    for m in moves:
        loc = m.origin or Location("?", 1)
        if m.old == m.new:
            problems.append(ManifestProblem(loc, "moved", f"moves {m.old!r} to itself"))
        if m.old in names:
            problems.append(ManifestProblem(
                loc, "moved", f"{m.old!r} is moved to {m.new!r} but is still an item of the manifests; "
                "remove one of them"))
        for seen, name, what in ((seen_old, m.old, "from"), (seen_new, m.new, "to")):
            if name in seen:
                first = seen[name]
                problems.append(ManifestProblem(
                    loc, "moved", f"{name!r} appears twice as `{what}` (also at {first.file}:{first.line})"))
            seen.setdefault(name, loc)


def _locate_constructor_error(text: str) -> int | None:
    """Line of the first scalar the safe constructor refuses (e.g. the timestamp 2024-13-01)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except Exception:  # noqa: BLE001 - only looking for a line number
        return None
    constructor = yaml.SafeLoader("")
    failing: list[int] = []
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                constructor.construct_object(node, deep=True)
            except Exception:  # noqa: BLE001
                failing.append(node.start_mark.line + 1)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
    return min(failing) if failing else None


def _label(item: Any, index: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return (
        name
        if isinstance(name, str) and name and len(name) <= 128 and "\n" not in name
        else f"media[{index}]"
    )


def _path_words(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class _ManifestFileLoader:
    """Loads one manifest file; problems go to the shared list, with this file's name and lines."""

    def __init__(
        self,
        path: Path,
        rel: str,
        confiner: PathConfiner,
        check_files: bool,
        problems: list[ManifestProblem],
    ) -> None:
        self.path = path
        self.rel = rel
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.confiner = confiner
        self.check_files = check_files
        self.problems = problems
        self.node: yaml.Node | None = None
        self.data: Any = None
        self.defaults: dict[str, Any] = {}
        self._shared_tags: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._shared_options: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
        self.moves: list[Move] = []

    def _shared(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        return self._shared_tags.setdefault(tags, tags)

    def problem(self, line: int | None, field: str | None, message: str) -> None:
        # Every problem carries a line, so a reader (or an editor) can jump to it.
        self.problems.append(ManifestProblem(Location(self.rel, line or 1), field, message))

    # -- parsing -------------------------------------------------------------------------------

    def _parse(self) -> bool:
        try:
            # A FIFO or device named *.yaml would block or never end; only regular files are read.
            if not stat.S_ISREG(os.stat(self.path).st_mode):
                self.problem(1, None, "is not a regular file")
                return False
            raw = self.path.read_bytes()
        except OSError as exc:
            self.problem(1, None, f"cannot read the file: {exc.strerror or exc}")
            return False
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            self.problem(line, None, f"is not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8")
            return False
        try:
            self.data, self.node = parse_yaml_document(text)
        except Exception as exc:  # noqa: BLE001 - any parser/constructor failure is a located problem
            line, words = yaml_error_words(exc)
            if line is None and not isinstance(exc, (yaml.YAMLError, RecursionError)):
                line = _locate_constructor_error(text)
            self.problem(line, None, words)
            return False
        return True

    def load(self, items: list[DesiredItem], names: list[tuple[str, Location]]) -> None:
        if not self._parse():
            return
        data, node = self.data, self.node
        if data is None:  # empty file, or only comments: no items
            return
        if not isinstance(data, dict):
            self.problem(
                node_line(node),
                None,
                f"a manifest must be a mapping with a `media:` list (and optional `defaults:`), "
                f"got {describe_value(data)}",
            )
            return
        for key in data:
            if key not in _TOP_LEVEL:
                hint = closest(str(key), _TOP_LEVEL)
                extra = f"; did you mean {hint}?" if hint else "; a manifest has only defaults, media and moved"
                self.problem(
                    node_line(node, [key], key=True), str(key)[:80], f"unknown top-level field{extra}"
                )
        self._load_defaults(data.get("defaults"))
        self._load_moved(data.get("moved"))
        media = data.get("media")
        if media is None:
            return
        if not isinstance(media, list):
            self.problem(
                node_line(node, ["media"]),
                "media",
                f"expected a list of media items, got {describe_value(media)}",
            )
            return
        self._load_media(media, items, names)

    def _load_defaults(self, defaults: Any) -> None:
        if defaults is None:
            return
        try:
            ManifestDefaults.model_validate(defaults)
        except ValidationError as exc:
            self._report_section(
                "defaults", exc,
                lambda field: unknown_field_words(field, ManifestDefaults.model_fields, "defaults"))
            return
        self.defaults = defaults

    def _report_section(self, section: str, exc: ValidationError, unknown: Callable[[str], str]) -> None:
        """Every error of a top-level section (`defaults`, `moved`), at its line; `unknown` words an
        unknown field."""
        for err in exc.errors(include_url=False):
            loc = (section, *err["loc"])
            key = err["type"] == "extra_forbidden"
            words = explain_error({**err, "loc": loc}, expected=_EXPECTED, patterns=_PATTERNS)
            if key:
                words = unknown(str(loc[-1]))
            self.problem(node_line(self.node, loc, key=key), section + _path_words(err["loc"]), words)

    def _load_moved(self, moved: Any) -> None:
        if moved is None:
            return
        if not isinstance(moved, list):
            self.problem(node_line(self.node, ["moved"]), "moved",
                         f"expected a list of {{from: OLD, to: NEW}} entries, got {describe_value(moved)}")
            return
        try:
            entries: list[Any] = MOVED_ADAPTER.validate_python(moved)
        except ValidationError as exc:
            self._report_section("moved", exc, lambda field: "unknown field; a moved entry has only from and to")
            bad = {err["loc"][0] for err in exc.errors(include_url=False)}
            # The valid entries are still checked against the items (every problem at once).
            entries = [None if i in bad else MOVED_ADAPTER.validate_python([m])[0] for i, m in enumerate(moved)]
        for index, entry in enumerate(entries):
            if entry is not None:
                line = node_line(self.node, ["moved", index])
                self.moves.append(Move(entry.from_, entry.to, Location(self.rel, line or 1)))

    # -- items ---------------------------------------------------------------------------------

    def _merge(self, item: Any) -> Any:
        """The item with this file's defaults applied: item values win; tags are merged, de-duplicated."""
        if not isinstance(item, dict):
            return item
        defaults = self.defaults
        tags = item.get("tags")
        if not defaults:
            if type(tags) is list and len(tags) > 1:
                try:
                    deduped = list(dict.fromkeys(tags))
                except TypeError:  # unhashable entries: validation reports them
                    return item
                if len(deduped) != len(tags):
                    return {**item, "tags": deduped}
            return item
        kind = item.get("type")
        allowed = DEFAULTABLE.get(kind) if isinstance(kind, str) else None  # `type: []`: validation says
        if allowed is None:
            return item
        merged = {k: v for k, v in defaults.items() if k in allowed}
        merged.update(item)
        default_tags = defaults.get("tags")
        if default_tags and type(tags) is list:
            try:
                merged["tags"] = list(dict.fromkeys([*default_tags, *tags]))
            except TypeError:
                pass
        return merged

    def _load_media(
        self, media: list[Any], items: list[DesiredItem], names: list[tuple[str, Location]]
    ) -> None:
        merged = [self._merge(item) for item in media]
        media_node = node_at(self.node, ["media"])
        if isinstance(media_node, yaml.SequenceNode) and len(media_node.value) == len(media):
            lines = [n.start_mark.line + 1 for n in media_node.value]
        else:  # an alias or merge made the node tree differ from the data; fall back to the list's line
            lines = [node_line(media_node) or 1] * len(media)
        try:
            models: list[Any] = ITEMS_ADAPTER.validate_python(merged)
        except ValidationError as exc:
            models = self._report_invalid(media, merged, exc)
        # Names count for uniqueness even when their item has other problems: report everything at once.
        for index, item in enumerate(media):
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str):
                names.append((name, Location(self.rel, lines[index])))
        for index, model in enumerate(models):
            if model is None:
                continue
            item = self._to_item(model, index, Location(self.rel, lines[index]))
            if item is not None:
                items.append(item)

    def _report_invalid(self, media: list[Any], merged: list[Any], exc: ValidationError) -> list[Any]:
        """Report every error of the file's media list; return the models of the valid items (None for others)."""
        bad: set[int] = set()
        for err in exc.errors(include_url=False):
            index = err["loc"][0]
            bad.add(index)
            self._report_item_error(index, media[index], merged[index], err)
        return [None if i in bad else ITEM_ADAPTER.validate_python(m) for i, m in enumerate(merged)]

    def _report_item_error(self, index: int, item: Any, merged: Any, err: dict[str, Any]) -> None:
        label = _label(item, index)
        kind = err["type"]
        loc = list(err["loc"][1:])
        item_type = merged.get("type") if isinstance(merged, dict) else None
        if (
            loc
            and isinstance(item_type, str)
            and loc[0] == item_type
            and kind
            not in (
                "union_tag_invalid",
                "union_tag_not_found",
            )
        ):
            loc = loc[1:]  # drop the discriminator tag pydantic puts in the path
        error_field = getattr((err.get("ctx") or {}).get("error"), "field", None)
        if not loc and isinstance(error_field, str):
            loc = [error_field]
        item_loc: list[Any] = ["media", index]

        if not isinstance(item, dict):
            words = f"each media item must be a mapping with name and type, got {describe_value(item)}"
            self.problem(node_line(self.node, item_loc), label, words)
            return
        if kind == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            hint = closest(str(tag), ITEM_TYPES)
            words = f"unknown type {tag!r}; expected one of {_TYPE_LIST}" + (f" (did you mean {hint}?)" if hint else "")
            self.problem(node_line(self.node, [*item_loc, "type"]), f"{label}.type", words)
            return
        if kind == "union_tag_not_found":
            type_value = item.get("type")
            if type_value is None:
                words = f"type is required: one of {_TYPE_LIST}"
            else:
                words = f"expected one of {_TYPE_LIST}, got {describe_value(type_value)}"
            self.problem(node_line(self.node, item_loc), f"{label}.type", words)
            return
        if not loc:
            self.problem(node_line(self.node, item_loc), label, explain_error(err))
            return

        field = loc[0]
        where: list[Any] = [*item_loc, *loc]
        from_defaults = False
        if field not in item and field in self.defaults:
            where, from_defaults = ["defaults", *loc], True
        elif field == "tags" and len(loc) > 1 and isinstance(item.get("tags"), list):
            own = item["tags"]
            if merged.get("tags") is not own:
                # Defaults were merged in or duplicates dropped, so the index points into another
                # list: find the offending tag where it was written instead.
                where, from_defaults = self._locate_tag(err.get("input"), own, item_loc)
                loc = ["tags"]
        if kind == "extra_forbidden":
            model = ITEM_MODELS.get(item_type)  # type: ignore[arg-type]
            fields = model.model_fields if model else {}
            words = unknown_field_words(str(field), fields, f"{item_type} items")
            self.problem(node_line(self.node, where, key=True), f"{label}.{str(field)[:80]}", words)
            return
        words = explain_error(err, expected=_EXPECTED, patterns=_PATTERNS)
        if kind == "missing":
            line = node_line(self.node, item_loc)
        else:
            line = node_line(self.node, where)
        if from_defaults:
            words += " (value from defaults)"
        self.problem(line, f"{label}{_path_words(loc)}", words)

    def _locate_tag(self, value: Any, own: list[Any], item_loc: list[Any]) -> tuple[list[Any], bool]:
        default_tags = self.defaults.get("tags") or []
        try:
            if value in own:
                return [*item_loc, "tags", own.index(value)], False
            if value in default_tags:
                return ["defaults", "tags", default_tags.index(value)], True
        except RecursionError:  # self-referencing YAML anchors; the tags line is close enough
            pass
        return [*item_loc, "tags"], False

    def _to_item(self, model: Any, index: int, origin: Location) -> DesiredItem | None:
        kind = Kind(model.type)
        local = None
        if kind.uploads_local_file:
            try:
                source, info = self.confiner.resolve(self.base_dir, model.file)
            except PathNotAllowed as exc:
                self.problem(node_line(self.node, ["media", index, "file"]), f"{model.name}.file", str(exc))
                return None
            if self.check_files:
                local = self._stat(model, index, source, info)
                if local is not None and kind is Kind.VIDEO and is_playlist(source):
                    local = self._with_segments(model, index, local)
                if local is None:
                    return None
        elif kind is Kind.URL:
            source = redact_url_userinfo(model.url)
        else:
            source = model.file_url
        metadata: dict[str, Any] = {}
        for name in UPDATABLE_FIELDS[kind]:
            value = getattr(model, name)
            if value is not None:
                metadata[name] = self._shared(tuple(value)) if name == "tags" else value
        if model.title is None:
            metadata["title"] = model.name.rstrip("/").rsplit("/", 1)[-1] or model.name
        options = {}
        for name in _OPTIONS_OF[kind]:
            value = getattr(model, name)
            if value is not None:
                options[name] = value
        # Equal tag lists and option sets are one object each (items are frozen): a large
        # library repeats them on thousands of items.
        options = self._shared_options.setdefault(tuple(options.items()), options)
        return DesiredItem(
            name=model.name,
            kind=kind,
            source=source,
            metadata=metadata,
            options=options,
            local=local,
            protect=model.protect,
            origin=origin,
            fetch_url=model.url if kind is Kind.URL and source != model.url else None,
            import_id=model.import_id,
        )

    def _stat(self, model: Any, index: int, real: str, info: os.stat_result | None,
              shown: str | None = None) -> LocalFile | None:
        shown = shown or str(model.file)

        def fail(words: str) -> None:
            self.problem(node_line(self.node, ["media", index, "file"]), f"{model.name}.file", words)

        if info is None:
            try:
                info = os.stat(real)
            except FileNotFoundError:
                fail(f"file not found: {shown} (looked for {real})")
                return None
            except (OSError, ValueError) as exc:
                fail(f"cannot read {shown}: {getattr(exc, 'strerror', None) or exc}")
                return None
        if not stat.S_ISREG(info.st_mode):
            fail(f"{shown} is not a regular file")
            return None
        return LocalFile(real, info.st_size, info.st_mtime_ns, info.st_dev, info.st_ino)

    def _with_segments(self, model: Any, index: int, playlist: LocalFile) -> LocalFile | None:
        """An HLS playlist with the segment files it names, each confined and stat-ed like `file`."""
        def fail(words: str) -> None:
            self.problem(node_line(self.node, ["media", index, "file"]), f"{model.name}.file", words)

        try:
            names = read_segment_names(playlist.path)
        except (ValueError, VodsyncError) as exc:
            fail(f"{model.file}: {exc}")
            return None
        segments = []
        base = os.path.dirname(playlist.path)
        for name in names:
            try:
                real, info = self.confiner.resolve(base, name)
            except PathNotAllowed as exc:
                fail(f"segment {name!r} of {model.file}: {exc}")
                return None
            segment = self._stat(model, index, real, info, shown=f"segment {name!r} of {model.file}")
            if segment is None:
                return None
            segments.append(Segment(name, segment))
        return dataclasses.replace(playlist, segments=tuple(segments))
