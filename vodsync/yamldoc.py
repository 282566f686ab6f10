"""YAML documents with line numbers: parse once, keep the node tree, refuse what would crash.

Manifests, sidecars and `vodsync.yaml` are parsed here. `parse_yaml_document`
returns the data *and* its composed node tree, so a problem found later
(by pydantic, say) is reported at its line without parsing again; `node_line`
finds that line. Documents nested deeper than `MAX_YAML_DEPTH` are refused
before they can exhaust libyaml's recursive C composer.

Construction is PyYAML's SafeConstructor made cheap for the common shape
(plain mappings, lists and strings), with the result `yaml.safe_load` gives;
see `_construct`. Unlike `yaml.safe_load`, a mapping that repeats a key is an
error (`DuplicateKey`, located at the second one): silently keeping the last
`media:` of a manifest would let `--prune` delete the first one's items.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

_FAST_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Deeper than any real manifest or config needs; far below what libyaml's recursive composer survives.
MAX_YAML_DEPTH = 100
# Below this bound on the nesting depth, composing cannot exhaust the C stack (it crashes near
# 30,000 levels), so the depth is checked on the composed tree instead of by a second parse.
_DEPTH_SCAN_THRESHOLD = 4000

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
# Scalar tags whose constructors return a value. Not among them: collection tags (their
# constructors are generators) and the `<<` merge and `=` value keys PyYAML rewrites.
_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "binary", "timestamp")
)


def _nesting_bound(text: str) -> int:
    """A cheap upper bound on the nesting depth of a YAML text (C-speed string operations only).

    Flow collections nest one level per `[`/`{`; block collections need either more
    indentation or another `- `/`? `/`: ` on the same line, so their depth is at
    most about twice the longest line.
    """
    flow = text.count("[") + text.count("{")
    if flow > _DEPTH_SCAN_THRESHOLD:
        return flow
    return flow + 2 * max(map(len, text.split("\n")), default=0) + 2


class TooDeep(yaml.MarkedYAMLError):
    """A document nested deeper than vodsync accepts (vodsync's own limit and words)."""


def _too_deep(max_depth: int, node_or_event: Any) -> TooDeep:
    return TooDeep(problem=f"nested more than {max_depth} levels deep", problem_mark=node_or_event.start_mark)


def _check_depth(text: str, loader_class: type, max_depth: int) -> None:
    """Refuse documents nested deeper than `max_depth` before composing them.

    libyaml's composer (used by CSafeLoader) recurses in C without a limit: about
    30,000 nested `[` crash the interpreter with a segfault instead of raising.
    Walking the event stream is flat, so it is safe on any input.
    """
    parser = loader_class(text)
    try:
        depth = 0
        opening = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
        closing = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
        while (event := parser.get_event()) is not None:
            if isinstance(event, opening):
                depth += 1
                if depth > max_depth:
                    raise _too_deep(max_depth, event)
            elif isinstance(event, closing):
                depth -= 1
    finally:
        parser.dispose()


def _check_node_depth(root: yaml.Node, max_depth: int) -> None:
    """`_check_depth` on an already composed tree: an iterative walk over collection nodes only.

    Aliases make the tree a graph (shared, even cyclic, nodes); like the event stream, the
    walk counts each node once, where it was written (anchors come before their aliases).
    """
    collections = (MappingNode, SequenceNode)
    stack: list[tuple[yaml.Node, int]] = [(root, 1)] if isinstance(root, collections) else []
    seen: set[int] = set()
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if depth > max_depth:
            raise _too_deep(max_depth, node)
        if isinstance(node, MappingNode):
            children = [c for pair in node.value for c in pair if isinstance(c, collections)]
        else:
            children = [c for c in node.value if isinstance(c, collections)]
        # reversed: the first too-deep node in document order is the one reported
        stack.extend((c, depth + 1) for c in reversed(children))


class DuplicateKey(yaml.MarkedYAMLError):
    """A mapping that names one key twice: YAML forbids it, and PyYAML would silently keep the last."""


def _duplicate_key(mapping_node: yaml.Node, first: yaml.Node, again: yaml.Node) -> DuplicateKey:
    return DuplicateKey(
        context="while constructing a mapping",
        context_mark=mapping_node.start_mark,
        problem=f"duplicate key {again.value!r} (first at line {first.start_mark.line + 1})",
        problem_mark=again.start_mark,
    )


def _check_duplicate_keys(root: yaml.Node) -> None:
    """Refuse a mapping with a repeated scalar key anywhere in a composed tree (iterative, linear).

    For documents `_construct` leaves to PyYAML: keys merged in with `<<` may be overridden
    by the mapping's own keys (that is what a merge is for), so merge keys are skipped.
    """
    stack: list[yaml.Node] = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            keys: dict[tuple[str, str], yaml.Node] = {}
            for key_node, value_node in node.value:
                stack.append(value_node)
                if not isinstance(key_node, ScalarNode):
                    stack.append(key_node)
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                first = keys.setdefault((key_node.tag, key_node.value), key_node)
                if first is not key_node:
                    raise _duplicate_key(node, first, key_node)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


class _Unusual(Exception):
    """The document has a shape `_construct` leaves to PyYAML's own constructor."""


def _construct(loader: Any, root: yaml.Node, max_depth: int) -> Any:
    """The data of a composed document, as `loader.construct_document(root)` builds it.

    PyYAML's constructor spends most of a manifest's parse on per-node bookkeeping
    (recursion guards, generators for recursive structures, the merge-key pass).
    Plain mappings, lists and strings are built here directly; every other scalar
    (ints, bools, dates, ...) goes to the loader's own constructor for its tag.
    Aliases, merge keys, complex keys and other collection tags raise `_Unusual`,
    and the caller hands the whole document to PyYAML instead. It also checks the
    nesting depth on the way down (depth-first, so the first too-deep node in
    document order is the one reported).
    """
    return _Builder(loader, max_depth).build(root, 1)


class _Builder:
    """`_construct`'s walk. A class, not a recursive closure: a closure that calls itself is a
    reference cycle, which would keep each document's `seen` set alive until the cyclic GC ran."""

    __slots__ = ("loader", "constructors", "max_depth", "seen")

    def __init__(self, loader: Any, max_depth: int) -> None:
        self.loader = loader
        self.constructors = loader.yaml_constructors
        self.max_depth = max_depth
        self.seen: set[int] = set()

    def build(self, node: yaml.Node, depth: int) -> Any:
        cls = node.__class__
        if cls is ScalarNode:
            tag = node.tag
            if tag == _STR:
                return node.value
            if tag not in _SCALAR_TAGS:  # `<<`, `=`, `!!map ""`, `!custom`: PyYAML handles or words them
                raise _Unusual
            return self.constructors[tag](self.loader, node)
        if depth > self.max_depth:
            raise _too_deep(self.max_depth, node)
        if id(node) in self.seen:  # an alias: identity (and cycles) are PyYAML's business
            raise _Unusual
        self.seen.add(id(node))
        if cls is MappingNode and node.tag == _MAP:
            mapping = {}
            for key_node, value_node in node.value:
                if key_node.__class__ is not ScalarNode:  # a complex key
                    raise _Unusual
                size = len(mapping)
                mapping[self.build(key_node, depth + 1)] = self.build(value_node, depth + 1)
                if len(mapping) == size:  # an equal key: a YAML duplicate unless only Python equates them
                    _check_duplicate_keys(node)
            return mapping
        if cls is SequenceNode and node.tag == _SEQ:
            return [self.build(child, depth + 1) for child in node.value]
        raise _Unusual  # !!set, !!omap, !!pairs, ...


def parse_yaml_document(
    text: str, *, fast: bool = True, max_depth: int = MAX_YAML_DEPTH
) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document; return the data and its node tree (nodes carry `start_mark.line`).

    The data is what `yaml.safe_load` returns. Raises `yaml.YAMLError` (also for
    nesting deeper than `max_depth`) or whatever a constructor raises (a
    `ValueError` for a timestamp such as 2024-13-01); callers turn those into
    their own errors. `fast=False` uses the pure-Python parser (for tiny
    documents, where the C loader's set-up costs more than it saves).
    """
    loader_class = _FAST_LOADER if fast else yaml.SafeLoader
    bound = _nesting_bound(text)
    try:
        if bound > _DEPTH_SCAN_THRESHOLD:
            _check_depth(text, loader_class, max_depth)  # before composing: it could crash
        loader = loader_class(text)
    except yaml.YAMLError as exc:
        _depth_first(text, exc, loader_class, max_depth)
        raise
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            _depth_first(text, exc, loader_class, max_depth)
            raise
        if node is None:
            return None, None
        try:
            return _construct(loader, node, max_depth), node
        except _Unusual:
            pass
        if bound > max_depth:
            _check_node_depth(node, max_depth)
        _check_duplicate_keys(node)
        return loader.construct_document(node), node
    finally:
        loader.dispose()


# Quoted scalars and comments, whose brackets do not nest anything.
_NOT_FLOW = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"\\]|\\.)*\"|(?:^|(?<=\s))#[^\n]*")
_FLOW_CHARS = re.compile(r"[\[\]{}]")


def _depth_first(text: str, exc: yaml.YAMLError, loader_class: type, max_depth: int) -> None:
    """Raise vodsync's depth error if flow collections nest too deeply before where `exc` arose.

    libyaml (0.2.6 and later) has a nesting limit of its own, which its scanner reaches while
    reading ahead, before the event walk has counted to `max_depth`. Whether a document is too
    deep must not depend on the libyaml build, so on an error from the C parser the brackets
    up to the error are counted (C-speed regular expressions; an error path only). Block
    nesting deep enough for libyaml's limit needs lines of thousands of columns, which the
    event walk reaches first.
    """
    if isinstance(exc, TooDeep) or loader_class is yaml.SafeLoader:
        return
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    prefix = _NOT_FLOW.sub(lambda m: " " * len(m.group()), text if mark is None else text[: mark.index + 1])
    depth = 0
    for bracket in _FLOW_CHARS.finditer(prefix):
        depth = depth + 1 if bracket.group() in "[{" else max(depth - 1, 0)
        if depth > max_depth:
            index = bracket.start()
            line = prefix.count("\n", 0, index)
            column = index - (prefix.rfind("\n", 0, index) + 1)
            raise TooDeep(
                problem=f"nested more than {max_depth} levels deep",
                problem_mark=yaml.Mark("<unicode string>", index, line, column, None, None),
            ) from None


def yaml_error_words(exc: BaseException) -> tuple[int | None, str]:
    """(1-based line or None, message) for an exception raised while parsing YAML."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        parts = [p for p in (exc.context, exc.problem) if p]
        message = "; ".join(parts) or "invalid YAML"
        return (mark.line + 1 if mark else None), f"invalid YAML: {message}"
    if isinstance(exc, RecursionError):
        return None, "invalid YAML: nested too deeply"
    return None, f"invalid YAML: {exc}"[:300]


def node_at(node: yaml.Node | None, loc: Sequence[Any], *, key: bool = False) -> yaml.Node | None:
    """The deepest node along `loc` (mapping keys and sequence indexes); the key node if `key`."""
    current = node
    for i, part in enumerate(loc):
        if isinstance(current, MappingNode):
            found = None
            for k, v in current.value:  # the last duplicate key wins, as in the constructed data
                if isinstance(k, ScalarNode) and k.value == str(part):
                    found = (k, v)
            if found is None:
                return current
            current = found[0] if key and i == len(loc) - 1 else found[1]
        elif isinstance(current, SequenceNode) and isinstance(part, int) and 0 <= part < len(current.value):
            current = current.value[part]
        else:
            return current
    return current


def node_line(node: yaml.Node | None, loc: Sequence[Any] = (), *, key: bool = False) -> int | None:
    """1-based line of the node at `loc` (or of the nearest ancestor found)."""
    found = node_at(node, loc, key=key)
    return found.start_mark.line + 1 if found is not None else None
