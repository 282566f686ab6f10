"""Property: any manifest content gives items or a ManifestError whose every problem has a file and a line.

Malformed manifests and sidecar-like documents come from hypothesis: random
YAML structures built around the real field names, wrong types, huge values,
mangled YAML text and raw bytes. No input may raise anything else.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from vodsync.desired.loader import load_manifests
from vodsync.desired.manifest import MediaMetadata
from vodsync.errors import ManifestError

FIELDS = [
    "name", "type", "file", "url", "file_url", "title", "description", "tags", "cate_id", "cover_url",
    "template_group_id", "workflow_id", "storage_location", "app_id", "image_type", "business_type",
    "file_extension", "protect", "defaults", "media",
]  # fmt: skip
TYPES = ["video", "image", "attached", "url", "register", "Video", "", "audio"]
FILES = ["media/a.mp4", "media/b.png", "media/c.vtt", "media/missing.mp4", "../../etc/passwd", "/etc/hosts",
         "media", "media/a.mp4/x", "a\x00b.mp4", "~/.ssh/id_rsa"]  # fmt: skip

SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None,
)

huge_text = st.builds(
    lambda c, n: c * n, st.sampled_from("x,😀\u200d é\n"), st.sampled_from([129, 1025, 5000, 10**5])
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**63, 2**80]),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(TYPES + FILES + ["https://x.example/a.mp4", "http://", "ftp://x/y.mp4", "a,b", "😀"]),
    huge_text,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=4)), inner, max_size=4),
    ),
    max_leaves=8,
)


@st.composite
def items(draw):
    item = {}
    if draw(st.booleans()):
        item["name"] = draw(st.one_of(st.from_regex(r"[a-z0-9][a-z0-9._/-]{0,20}", fullmatch=True), values))
    if draw(st.booleans()):
        item["type"] = draw(st.one_of(st.sampled_from(TYPES), values))
    for field in draw(st.lists(st.sampled_from(FIELDS[2:]), max_size=5, unique=True)):
        item[field] = draw(st.one_of(st.sampled_from(FILES), values))
    return item


manifests = st.one_of(
    values,
    st.fixed_dictionaries(
        {},
        optional={
            "defaults": st.one_of(st.dictionaries(st.sampled_from(FIELDS), values, max_size=3), values),
            "media": st.one_of(st.lists(st.one_of(items(), values), max_size=4), values),
            "extra": values,
        },
    ),
)
# Sidecar files for drop folders carry bare metadata; fed to the manifest loader they must fail cleanly too.
sidecars = st.dictionaries(
    st.sampled_from(["title", "description", "tags", "cate_id", "cover_url", "template_group_id"]),
    values,
    max_size=4,
)


VALID = """\
defaults: {cate_id: 1, tags: [demo]}
media:
  - name: a
    type: video
    file: media/a.mp4
    title: A
    tags: [x, y]
  - {name: b, type: image, file: media/b.png, image_type: cover}
  - name: c
    type: attached
    file: media/c.vtt
    business_type: subtitle
  - {name: d, type: url, url: "https://x.example/d.mp4"}
  - {name: e, type: register, file_url: "https://b.oss-cn-shanghai.aliyuncs.com/e.mp4"}
"""


def as_yaml_text(document) -> str:
    # JSON is (near enough) YAML and needs no serializer that could refuse exotic values.
    return json.dumps(document, ensure_ascii=False, default=str)


@pytest.fixture(scope="module")
def workdir():
    root = Path(tempfile.mkdtemp(prefix="vodsync-fuzz-"))
    (root / ".git").mkdir()
    (root / "manifests" / "media").mkdir(parents=True)
    for name in ("a.mp4", "b.png", "c.vtt"):
        (root / "manifests" / "media" / name).write_bytes(b"x")
    yield root / "manifests"
    shutil.rmtree(root)


def check(workdir: Path, contents: list[bytes]) -> None:
    for old in workdir.glob("*.yaml"):
        old.unlink()
    for i, content in enumerate(contents):
        (workdir / f"m{i}.yaml").write_bytes(content)
    try:
        items = load_manifests(workdir)
    except ManifestError as exc:
        assert exc.problems
        for problem in exc.problems:
            name = Path(problem.location.file).name  # relative to the working directory, or absolute
            assert name.startswith("m") and name.endswith(".yaml")
            assert isinstance(problem.location.line, int) and problem.location.line >= 1
            assert isinstance(problem.message, str) and problem.message
        str(exc)
    else:
        names = [item.name for item in items]
        assert names == sorted(set(names))


@settings(SETTINGS, max_examples=600)
@given(docs=st.lists(manifests, min_size=1, max_size=3))
def test_random_structures(workdir, docs):
    check(workdir, [as_yaml_text(d).encode("utf-8", "surrogatepass") for d in docs])


@settings(SETTINGS, max_examples=500)
@given(
    text=st.one_of(st.just(VALID), st.one_of(manifests, sidecars).map(as_yaml_text)),
    cuts=st.lists(st.integers(0, 2000), max_size=3),
    junk=st.one_of(
        st.sampled_from(["\n", " ", ":", "- ", "[", "{", "'", '"', "&a", "*a", "!!", "\t", "%"]),
        st.text(max_size=4),
    ),
)
def test_mangled_yaml_text(workdir, text, cuts, junk):
    # Damage valid and invalid documents where a person's typo might land.
    for cut in cuts:
        at = cut % (len(text) + 1)
        text = text[:at] + junk + text[at:]
    check(workdir, [text.encode("utf-8", "surrogatepass")])


@settings(SETTINGS, max_examples=500)
@given(data=st.one_of(st.binary(max_size=300), st.binary(max_size=40).map(lambda b: b"media:\n  - " + b)))
def test_random_bytes(workdir, data):
    check(workdir, [data])


@settings(SETTINGS, max_examples=400)
@given(doc=sidecars)
def test_sidecar_documents(workdir, doc):
    check(workdir, [as_yaml_text(doc).encode("utf-8", "surrogatepass")])
    # The shared metadata model only ever raises ValidationError.
    try:
        MediaMetadata.model_validate(doc)
    except ValidationError:
        pass
