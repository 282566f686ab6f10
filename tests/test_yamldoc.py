"""`parse_yaml_document` builds exactly what `yaml.safe_load` builds, on the fast path and off it."""

from __future__ import annotations

import datetime as dt
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vodsync import yamldoc
from vodsync.yamldoc import parse_yaml_document


def _same(a, b) -> bool:
    """Equal, with NaN equal to itself and types compared too (1 == 1.0 == True in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, set):
        return a == b
    return a == b


def _outcome(parse, text):
    try:
        return "ok", parse(text)
    except Exception as exc:  # noqa: BLE001 - the error's kind is part of the comparison
        return "error", type(exc).__name__


def _reference(text):
    return yaml.load(text, Loader=yaml.CSafeLoader)


def _ours(text):
    return parse_yaml_document(text)[0]


DOCUMENTS = [
    "",
    "# only a comment\n",
    "media: []\n",
    "a: 1\nb: 1.5\nc: true\nd: ~\ne: 0x1f\nf: 1_000\ng: .nan\nh: -.inf\ni: '1'\nj: 2024-01-02\n",
    "k: 2024-01-02 03:04:05+08:00\nl: !!binary aGVsbG8=\nm: !!str 12\nn: !!int '7'\no: !!float '2'\n",
    # "dup: 1\ndup: 2\n" is where vodsync differs on purpose: see the duplicate-key tests below.
    "1: int key\ntrue: bool key\n~: null key\n2024-01-02: date key\n",
    "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n",  # merge keys
    "inline: {<<: {x: 1, y: 2}, y: 3}\nlisted: {<<: [{x: 1}, {z: 2}]}\n",
    "a: &a [1, 2]\nb: *a\n",  # aliases: identity is PyYAML's
    "s: !!set {a, b}\no: !!omap [{a: 1}, {b: 2}]\np: !!pairs [{a: 1}]\n",
    "? [complex, key]\n: value\n",
    "=: value key\n",
    "x: !!map ''\n",
    "x: !custom 1\n",
    "x: 2024-13-01\n",  # a timestamp-shaped value the constructor refuses
    "- a\n- [b, {c: d}]\n- {e: [f, g]}\n",
    "plain scalar document\n",
    "x: |\n  block\n  text\ny: >\n  folded\n  text\n",
    "a: {b: {c: {d: {e: [1, [2, [3]]]}}}}\n",
    "k: [unhashable]\n? {a: 1}\n: v\n",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_same_data_or_same_error_as_safe_load(text):
    ours, ref = _outcome(_ours, text), _outcome(_reference, text)
    assert ours[0] == ref[0], (ours, ref)
    if ours[0] == "ok":
        assert _same(ours[1], ref[1]), (ours[1], ref[1])


def test_plain_documents_skip_pyyaml_constructor(monkeypatch):
    # The speed comes from not calling construct_document for the common shape; aliases still do.
    calls = []
    original = yamldoc._FAST_LOADER.construct_document
    monkeypatch.setattr(
        yamldoc._FAST_LOADER, "construct_document", lambda self, node: calls.append(1) or original(self, node)
    )
    parse_yaml_document("media:\n  - {name: a, type: video, tags: [x, y], cate_id: 3}\n")
    assert calls == []
    parse_yaml_document("a: &x [1]\nb: *x\n")
    assert calls == [1]


def test_too_deep_on_the_fast_path_names_the_first_deep_line():
    text = "a:\n" + "".join("  " * i + "- \n" for i in range(1, 150))
    with pytest.raises(yaml.MarkedYAMLError) as caught:
        parse_yaml_document(text, max_depth=10)
    assert caught.value.problem_mark.line + 1 == 11
    assert "nested more than 10 levels deep" in str(caught.value)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.dates(),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.binary(max_size=8),
)
_keys = st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none())
_data = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_data, flow=st.sampled_from([None, True, False]), canonical=st.booleans())
def test_any_dumped_document_round_trips_like_safe_load(data, flow, canonical):
    text = yaml.safe_dump(data, default_flow_style=flow, canonical=canonical, allow_unicode=True)
    assert _same(_ours(text), _reference(text))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\nb: 2\na: 3\n", 3),
        ("x:\n  - {k: 1, k: 2}\n", 2),
        ("base: &b {k: 1}\nuse:\n  <<: *b\n  j: 2\n  j: 3\n", 5),  # PyYAML's path (a merge key)
    ],
)
def test_a_repeated_mapping_key_is_an_error_at_its_second_line(text: str, line: int) -> None:
    from vodsync.yamldoc import yaml_error_words

    with pytest.raises(yaml.YAMLError) as caught:
        parse_yaml_document(text)
    got_line, words = yaml_error_words(caught.value)
    assert got_line == line and "duplicate key" in words


def test_a_merge_key_overridden_by_an_own_key_is_not_a_duplicate() -> None:
    data, _ = parse_yaml_document("base: &b {k: 1}\nuse:\n  <<: *b\n  k: 2\n")
    assert data["use"] == {"k": 2}
