"""Manifest loading: exact DesiredItems, defaults, and problems with file, line and field."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from vodsync.desired.items import DesiredItem, Kind, LocalFile
from vodsync.desired.loader import load_manifests, manifest_schema
from vodsync.errors import Location, ManifestError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "manifests" / "media").mkdir(parents=True)
    for name, size in (("intro.mp4", 10), ("logo.png", 3), ("intro.en.vtt", 7)):
        (tmp_path / "manifests" / "media" / name).write_bytes(b"x" * size)
    # Locations are named relative to the working directory: here, the manifests directory.
    monkeypatch.chdir(tmp_path / "manifests")
    return tmp_path


def write(repo: Path, rel: str, text: str) -> Path:
    path = repo / "manifests" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(repo: Path, **kw) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifests(repo / "manifests", **kw)
    for p in caught.value.problems:
        assert p.location.file and p.location.line, p
    return [str(p) for p in caught.value.problems]


def local(path: Path) -> LocalFile:
    st = os.stat(path)
    return LocalFile(str(path), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)


def test_all_kinds_map_to_exact_items(repo):
    write(
        repo,
        "lib.yaml",
        """
        defaults:
          cate_id: 100
          tags: [demo]
        media:
          - name: intro
            type: video
            file: media/intro.mp4
            title: Intro
            description: First episode
            tags: [intro, demo]
            cover_url: https://example.com/intro.jpg
            template_group_id: VOD_NO_TRANSCODE
            workflow_id: wf1
            storage_location: outin-1.oss-cn-shanghai.aliyuncs.com
            app_id: app-1000000
          - name: brand/logo
            type: image
            file: media/logo.png
            protect: true
          - name: intro-subtitles-en
            type: attached
            file: ./media/../media/intro.en.vtt
            business_type: subtitle
            title: Intro (English)
        """,
    )
    write(
        repo,
        "remote/ingest.yml",
        """
        media:
          - name: trailer
            type: url
            url: https://cdn.example.com/get?id=1
            file_extension: mp4
            title: Trailer
          - name: archive-ep1
            type: register
            file_url: https://outin-abc.oss-cn-shanghai.aliyuncs.com/archive/ep1.mp4
            cover_url: https://example.com/ep1.jpg
        """,
    )
    media = (repo / "manifests" / "media").resolve()
    items = load_manifests(repo / "manifests")
    assert [i.name for i in items] == ["archive-ep1", "brand/logo", "intro", "intro-subtitles-en", "trailer"]
    by_name = {i.name: i for i in items}
    assert by_name["intro"] == DesiredItem(
        name="intro",
        kind=Kind.VIDEO,
        source=str(media / "intro.mp4"),
        metadata={
            "title": "Intro",
            "description": "First episode",
            "tags": ("demo", "intro"),
            "cate_id": 100,
            "cover_url": "https://example.com/intro.jpg",
        },
        options={
            "template_group_id": "VOD_NO_TRANSCODE",
            "workflow_id": "wf1",
            "storage_location": "outin-1.oss-cn-shanghai.aliyuncs.com",
            "app_id": "app-1000000",
        },
        local=local(media / "intro.mp4"),
        protect=False,
        origin=Location("lib.yaml", 5),
    )
    assert by_name["brand/logo"] == DesiredItem(
        name="brand/logo",
        kind=Kind.IMAGE,
        source=str(media / "logo.png"),
        metadata={"title": "logo", "tags": ("demo",), "cate_id": 100},  # title: last segment of the name
        options={"image_type": "default"},
        local=local(media / "logo.png"),
        protect=True,
        origin=Location("lib.yaml", 16),
    )
    assert by_name["intro-subtitles-en"] == DesiredItem(
        name="intro-subtitles-en",
        kind=Kind.ATTACHED,
        source=str(media / "intro.en.vtt"),
        metadata={"title": "Intro (English)", "tags": ("demo",), "cate_id": 100},
        options={"business_type": "subtitle"},
        local=local(media / "intro.en.vtt"),
        origin=Location("lib.yaml", 20),
    )
    assert by_name["trailer"] == DesiredItem(
        name="trailer",
        kind=Kind.URL,
        source="https://cdn.example.com/get?id=1",
        metadata={"title": "Trailer"},
        options={"file_extension": "mp4"},
        origin=Location("remote/ingest.yml", 2),
    )
    assert by_name["archive-ep1"] == DesiredItem(
        name="archive-ep1",
        kind=Kind.REGISTER,
        source="https://outin-abc.oss-cn-shanghai.aliyuncs.com/archive/ep1.mp4",
        metadata={"title": "archive-ep1", "cover_url": "https://example.com/ep1.jpg"},
        origin=Location("remote/ingest.yml", 7),
    )
    # Exactly the fields named by the contract, nothing more (every field compared, including origin).
    for item in items:
        assert isinstance(item.metadata["title"], str)


def test_defaults_merge_and_item_values_win(repo):
    write(
        repo,
        "a.yaml",
        """
        defaults:
          cate_id: 1
          tags: [a, b]
          description: from defaults
          cover_url: https://example.com/default.jpg
          protect: true
        media:
          - {name: v, type: video, file: media/intro.mp4, cate_id: 2, tags: [b, c, a, d]}
          - {name: i, type: image, file: media/logo.png, protect: false}
          - {name: u, type: url, url: "https://x/a.mp4"}
        """,
    )
    items = {i.name: i for i in load_manifests(repo / "manifests")}
    assert items["v"].metadata["tags"] == ("a", "b", "c", "d")
    assert items["v"].metadata["cate_id"] == 2
    assert items["v"].metadata["description"] == "from defaults"
    assert items["v"].metadata["cover_url"] == "https://example.com/default.jpg"
    assert items["v"].protect is True
    # A default cover_url does not break image items (which have no cover); item protect wins.
    assert "cover_url" not in items["i"].metadata and items["i"].protect is False
    assert items["u"].metadata["tags"] == ("a", "b")


def test_defaults_apply_only_to_their_own_file(repo):
    write(repo, "a.yaml", "defaults: {tags: [a]}\nmedia: []\n")
    write(repo, "b.yaml", "media: [{name: v, type: video, file: media/intro.mp4}]\n")
    (item,) = load_manifests(repo / "manifests")
    assert "tags" not in item.metadata


def test_tags_merge_counts_toward_the_limit(repo):
    write(
        repo,
        "a.yaml",
        """
        defaults:
          tags: [d1, d2, d3, d4, d5, d6, d7, d8, d9]
        media:
          - name: v
            type: video
            file: media/intro.mp4
            tags: [i1, i2, i3, i4, i5, i6, i7, i8]
        """,
    )
    (problem,) = problems(repo)
    assert problem == "a.yaml:7: v.tags: must have at most 16 items, got 17"


def test_empty_and_comment_only_files_are_allowed(repo):
    write(repo, "empty.yaml", "")
    write(repo, "comments.yaml", "# nothing yet\n")
    write(repo, "nomedia.yaml", "defaults: {cate_id: 3}\n")
    assert load_manifests(repo / "manifests") == []


def test_only_yaml_files_and_not_hidden_dirs(repo):
    write(repo, "notes.txt", "media: 5")
    write(repo, ".hidden/x.yaml", "media: 5")
    write(repo, "deep/er/x.yml", "media: [{name: v, type: video, file: ../../media/intro.mp4}]")
    (item,) = load_manifests(repo / "manifests")
    assert item.origin == Location("deep/er/x.yml", 1)


def test_a_single_file_can_be_loaded(repo):
    path = write(repo, "one.yaml", "media: [{name: v, type: video, file: media/intro.mp4}]")
    (item,) = load_manifests(path)
    assert item.origin == Location("one.yaml", 1)


def test_every_problem_in_every_file_with_line_and_field(repo):
    write(
        repo,
        "a.yaml",
        """
        media:
          - name: intro
            type: video
            file: media/intro.mp4
            tittle: Hello
          - name: img
            type: image
            file: media/logo.png
            tags: 5
          - name: bad
            type: vidoe
          - just a string
          - name: t
            type: url
            url: https://x/y.mp4
            title: 2024
            cate_id: "7"
          - name: tagged
            type: video
            file: media/intro.mp4
            tags:
              - ok
              - "a,b"
        """,
    )
    write(repo, "b.yaml", "media:\n  - name: missing\n    type: video\n    file: media/nope.mp4\n")
    assert problems(repo) == [
        "a.yaml:5: intro.tittle: unknown field for video items; did you mean title?",
        "a.yaml:9: img.tags: expected a list of strings, got an integer",
        "a.yaml:11: bad.type: unknown type 'vidoe'; expected one of video, image, attached, url, register (did you mean video?)",
        "a.yaml:12: media[3]: each media item must be a mapping with name and type, got a string",
        "a.yaml:16: t.title: expected a string, got an integer (put the value in quotes to use it as text)",
        "a.yaml:17: t.cate_id: expected a positive integer, got a string",
        "a.yaml:23: tagged.tags[1]: a tag must not contain a comma (the API joins tags with commas), got 'a,b'",
        f"b.yaml:4: missing.file: file not found: media/nope.mp4 (looked for {(repo / 'manifests/media').resolve()}/nope.mp4)",
    ]


def test_missing_fields_point_at_the_item(repo):
    write(
        repo,
        "a.yaml",
        "media:\n  - name: x\n  - type: video\n    file: media/intro.mp4\n  - {name: s, type: attached, file: media/intro.en.vtt}\n",
    )
    assert problems(repo) == [
        "a.yaml:2: x.type: type is required: one of video, image, attached, url, register",
        "a.yaml:3: media[1].name: is required",
        "a.yaml:5: s.business_type: is required",
    ]


def test_model_level_rules_point_at_their_field(repo):
    write(
        repo,
        "a.yaml",
        """
        media:
          - name: s
            type: attached
            business_type: subtitle
            file: media/logo.png
          - name: u
            type: url
            url: https://x/get
        """,
    )
    got = problems(repo)
    assert got[0].startswith("a.yaml:5: s.file: file 'media/logo.png' does not fit business_type subtitle")
    assert got[1].startswith(
        "a.yaml:8: u.url: url 'https://x/get' does not end in a video or audio extension"
    )


def test_problems_in_defaults(repo):
    write(repo, "a.yaml", "defaults:\n  cate_id: 0\n  tagz: [a]\nmedia: []\nextra: 1\n")
    assert problems(repo) == [
        "a.yaml:2: defaults.cate_id: must be greater than 0, got 0",
        "a.yaml:3: defaults.tagz: unknown field for defaults; did you mean tags?",
        "a.yaml:5: extra: unknown top-level field; a manifest has only defaults, media and moved",
    ]


def test_duplicate_names_across_files_name_every_location(repo):
    write(repo, "a.yaml", "media:\n  - {name: intro, type: video, file: media/intro.mp4}\n")
    write(repo, "b/c.yaml", "# c\n# d\nmedia:\n  - {name: intro, type: image, file: media/nope.png}\n")
    got = problems(repo)
    assert "a.yaml:2: intro: duplicate name 'intro': defined 2 times, also at b/c.yaml:4" in got
    assert "b/c.yaml:4: intro: duplicate name 'intro': defined 2 times, also at a.yaml:2" in got


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "media: [\n",
            "a.yaml:2: invalid YAML: while parsing a flow node; did not find expected node content",
        ),
        (
            "- 1\n- 2\n",
            "a.yaml:1: a manifest must be a mapping with a `media:` list (and optional `defaults:`), got a list",
        ),
        (
            "just text\n",
            "a.yaml:1: a manifest must be a mapping with a `media:` list (and optional `defaults:`), got a string",
        ),
        ("media: 5\n", "a.yaml:1: media: expected a list of media items, got an integer"),
        ("media: {name: x}\n", "a.yaml:1: media: expected a list of media items, got a mapping"),
        ("defaults: [1]\n", "a.yaml:1: defaults: expected a mapping, got a list"),
        (
            "a: 1\n---\nb: 2\n",
            "a.yaml:2: invalid YAML: expected a single document in the stream; but found another document",
        ),
        ("x: 1\nwhen: 2024-13-01\n", "a.yaml:2: invalid YAML: month must be in 1..12"),
        ("? [a]\n: 1\n", "a.yaml:1: invalid YAML: while constructing a mapping; found unhashable key"),
    ],
)
def test_file_level_problems(repo, text, expected):
    write(repo, "a.yaml", text)
    assert problems(repo) == [expected]


def test_bytes_that_are_not_utf8(repo):
    (repo / "manifests" / "a.yaml").write_bytes(b"media:\n  - name: caf\xe9\n")
    assert problems(repo) == ["a.yaml:2: is not UTF-8 text (byte 0xe9); save it as UTF-8"]


def test_utf8_bom_is_fine(repo):
    (repo / "manifests" / "a.yaml").write_bytes(b"\xef\xbb\xbfmedia: []\n")
    assert load_manifests(repo / "manifests") == []


def test_check_files_false_skips_stat(repo):
    write(repo, "a.yaml", "media: [{name: v, type: video, file: media/not-there.mp4}]\n")
    (item,) = load_manifests(repo / "manifests", check_files=False)
    assert item.local is None and item.source.endswith("/media/not-there.mp4")


def test_a_directory_is_not_a_media_file(repo):
    (repo / "manifests" / "media" / "dir.mp4").mkdir()
    write(repo, "a.yaml", "media: [{name: v, type: video, file: media/dir.mp4}]\n")
    assert problems(repo) == ["a.yaml:1: v.file: media/dir.mp4 is not a regular file"]


def test_missing_manifests_directory(tmp_path):
    with pytest.raises(ManifestError, match="no such manifests directory"):
        load_manifests(tmp_path / "nope")


def test_the_repository_examples_load():
    items = load_manifests(REPO / "manifests")
    assert {i.kind for i in items} == set(Kind)
    for item in items:
        if item.kind.uploads_local_file:
            assert item.local is not None and 0 < item.local.size < 16_384


def test_schema_is_json_and_selects_by_type():
    schema = manifest_schema()
    json.dumps(schema)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) == {"defaults", "media", "moved"}
    assert schema["additionalProperties"] is False
    text = json.dumps(schema)
    for kind in ("video", "image", "attached", "url", "register"):
        assert f'"{kind}"' in text
    assert '"discriminator"' in text or '"oneOf"' in text


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("media: " + "[" * 50_000 + "]" * 50_000 + "\n", 1),  # crashed libyaml's C composer (segfault)
        ("media:\n" + "".join("  " * i + "- \n" for i in range(1, 400)), 101),
        ("media: " + "{a: " * 500 + "1" + "}" * 500 + "\n", 1),
    ],
)
def test_deep_nesting_is_refused_not_a_crash(repo, text, line):
    write(repo, "a.yaml", text)
    assert problems(repo) == [f"a.yaml:{line}: invalid YAML: nested more than 100 levels deep"]


def test_alias_bombs_and_self_references_stay_cheap(repo):
    levels = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 8))
    write(
        repo,
        "a.yaml",
        "l0: &l0 [x]\n" + levels + "media:\n  - {name: v, type: video, file: media/intro.mp4, tags: *l7}\n"
        "  - &self {name: w, type: video, file: media/intro.mp4, tags: [*self]}\n",
    )
    got = problems(repo)
    # An alias is reported where its anchor was written (the 9 lists of l6 on line 7).
    assert "a.yaml:7: v.tags[0]: expected a string, got a list" in got
    assert "a.yaml:11: w.tags[0]: expected a string, got a mapping" in got


def test_schema_does_not_offer_fields_a_kind_refuses():
    defs = manifest_schema()["$defs"]
    assert "cover_url" in defs["VideoItem"]["properties"]
    for kind in ("ImageItem", "AttachedItem"):
        assert not {"cover_url", "template_group_id", "workflow_id"} & set(defs[kind]["properties"])


def test_special_and_unreadable_entries_are_problems_not_hangs(repo):
    os.mkfifo(repo / "manifests" / "pipe.yaml")
    os.symlink(repo / "nowhere.yaml", repo / "manifests" / "dangling.yaml")
    got = problems(repo)
    assert got[0].startswith("dangling.yaml:1: cannot read the file")
    assert got[1] == "pipe.yaml:1: is not a regular file"
