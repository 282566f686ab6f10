"""Drop folders: stability with a fake clock, kinds, sidecars, content identity, and what happens to files after."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vodsync.config import DropFolderDefaults, DropFolderSettings
from vodsync.desired.dropfolder import (
    DropFolder,
    StabilityTracker,
    drop_folders,
    folder_label,
    sidecar_names,
)
from vodsync.desired.items import Kind
from vodsync.errors import ConfigError, Location


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class CountingHash:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, path: str) -> str:
        self.calls.append(path)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def settings(path: Path, **kw) -> DropFolderSettings:
    return DropFolderSettings.model_validate({"path": str(path), **kw}, strict=False)


@pytest.fixture
def env(tmp_path: Path):
    folder = tmp_path / "Incoming Videos"
    folder.mkdir()
    clock = Clock()
    hasher = CountingHash()

    def make(**kw) -> DropFolder:
        return DropFolder(settings(folder, **kw), hash_file=hasher, clock=clock)

    return folder, clock, hasher, make


def settle(drop: DropFolder, clock: Clock):
    """Scan once to observe, let the stability window pass, scan again."""
    drop.scan()
    clock.t += drop.settings.stable_seconds
    return drop.scan()


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- stability ---------------------------------------------------------------------------------


def test_tracker_needs_an_unchanged_window() -> None:
    t = StabilityTracker(5)
    t.observe("a", 10, 1, now=0)
    assert not t.is_stable("a", 4.9) and t.next_stable_at(1) == 5
    t.observe("a", 20, 2, now=3)  # grew: the window starts again
    assert not t.is_stable("a", 7)
    t.observe("a", 20, 2, now=7)  # same size and mtime: keeps the original start
    assert t.is_stable("a", 8) and t.next_stable_at(8) is None
    t.retain([])
    assert not t.is_stable("a", 100)


def test_file_is_taken_only_after_the_window(env) -> None:
    folder, clock, hasher, make = env
    drop = make()
    (folder / "intro.mp4").write_bytes(b"video")
    first = drop.scan()
    assert first.ready == [] and first.waiting == [folder / "intro.mp4"]
    assert first.wake_at == clock.t + 5
    clock.t += 4
    assert drop.scan().ready == []
    assert hasher.calls == []  # nothing is read before it is stable
    clock.t += 1
    (ready,) = drop.scan().ready
    assert ready.path == folder / "intro.mp4"


def test_growing_file_restarts_the_window(env) -> None:
    folder, clock, _, make = env
    drop = make()
    media = folder / "big.mov"
    media.write_bytes(b"x")
    drop.scan()
    clock.t += 4
    with media.open("ab") as f:
        f.write(b"more")
    assert drop.scan().ready == []
    clock.t += 4
    assert drop.scan().ready == []
    clock.t += 1
    assert len(drop.scan().ready) == 1


def test_file_changing_while_hashed_is_not_taken(env) -> None:
    folder, clock, _, _ = env
    media = folder / "clip.mp4"
    media.write_bytes(b"first")

    def racing_hash(path: str) -> str:
        data = Path(path).read_bytes()
        Path(path).write_bytes(b"first and then some")  # a writer appends mid-hash
        return digest_of(data)

    drop = DropFolder(settings(folder), hash_file=racing_hash, clock=clock)
    result = settle(drop, clock)
    assert result.ready == [] and result.waiting == [media]


def test_ignored_names_and_subfolders(env) -> None:
    folder, clock, _, make = env
    for name in ("a.mp4.part", "b.tmp", ".hidden.mp4", "~lock.mp4", "Thumbs.db", "c.crdownload"):
        (folder / name).write_bytes(b"x")
    (folder / "done").mkdir()
    (folder / "done" / "old.mp4").write_bytes(b"old")
    (folder / "failed").mkdir()
    (folder / "failed" / "bad.xyz").write_bytes(b"bad")
    (folder / "orphan.yaml").write_text("title: waiting for its media\n")
    result = settle(make(), clock)
    assert result.ready == [] and result.failed == [] and result.waiting == []


# --- kinds and items ---------------------------------------------------------------------------


def test_auto_kinds_and_the_item(env) -> None:
    folder, clock, _, make = env
    (folder / "Intro Clip.MP4").write_bytes(b"v")
    (folder / "logo.png").write_bytes(b"i")
    (folder / "intro.srt").write_bytes(b"s")
    (folder / "notes.txt").write_bytes(b"t")
    drop = make(defaults={"tags": ["inbox"], "cate_id": 7, "template_group_id": "VOD_NO_TRANSCODE"})
    result = settle(drop, clock)
    items = {c.path.name: c.item for c in result.ready}
    video = items["Intro Clip.MP4"]
    assert video.kind is Kind.VIDEO
    assert video.name == f"drop/incoming-videos/{digest_of(b'v')[:16]}"
    assert video.source == str(folder / "Intro Clip.MP4")
    assert dict(video.metadata) == {"title": "Intro Clip", "tags": ("inbox",), "cate_id": 7}
    assert dict(video.options) == {"template_group_id": "VOD_NO_TRANSCODE"}
    assert video.origin == Location(str(folder / "Intro Clip.MP4"))
    assert video.local is not None and video.local.size == 1
    image = items["logo.png"]
    assert image.kind is Kind.IMAGE and dict(image.options) == {"image_type": "default"}
    assert "template_group_id" not in image.options
    subtitle = items["intro.srt"]
    assert subtitle.kind is Kind.ATTACHED and subtitle.options["business_type"] == "subtitle"
    (failure,) = result.failed
    assert failure.path == folder / "notes.txt" and "cannot tell what .txt is" in failure.reason
    assert drop.origin == "drop:incoming-videos"


def test_configured_kind_checks_the_extension(env) -> None:
    folder, clock, _, make = env
    (folder / "a.png").write_bytes(b"1")
    (folder / "b.zip").write_bytes(b"2")
    (folder / "c.mp4").write_bytes(b"3")
    result = settle(make(kind="attached"), clock)
    types = {c.path.name: c.item.options["business_type"] for c in result.ready}
    assert types == {"a.png": "watermark", "b.zip": "material", "c.mp4": "material"}
    result = settle(make(kind="video"), clock)
    assert {c.path.name for c in result.ready} == {"c.mp4"}
    assert {f.path.name for f in result.failed} == {"a.png", "b.zip"}


def test_title_template(env) -> None:
    folder, clock, _, make = env
    (folder / "talk.webm").write_bytes(b"w")
    (ready,) = settle(make(defaults={"title_template": "{parent}: {stem} ({ext})"}), clock).ready
    assert ready.item.metadata["title"] == "Incoming Videos: talk (webm)"


def test_title_from_a_name_with_emoji_fails_with_advice(env) -> None:
    folder, clock, _, make = env
    (folder / "party 🎉.mp4").write_bytes(b"p")
    (failure,) = settle(make(), clock).failed
    assert "emoji" in failure.reason and "party 🎉.yaml" in failure.reason


def test_invalid_defaults_are_a_config_error(tmp_path: Path) -> None:
    bad = DropFolderSettings.model_construct(
        path=tmp_path,
        kind="auto",
        after="keep",
        stable_seconds=5,
        defaults=DropFolderDefaults.model_construct(
            title_template="{stem}", tags=["a,b"], cate_id=None, template_group_id=None, description=None
        ),
    )
    with pytest.raises(ConfigError, match=r"defaults\.tags\.0"):
        DropFolder(bad)


# --- sidecars ----------------------------------------------------------------------------------


def test_sidecar_metadata_wins_over_defaults(env) -> None:
    folder, clock, _, make = env
    (folder / "intro.mp4").write_bytes(b"v")
    (folder / "intro.yaml").write_text(
        "title: Our intro\ntags: [launch, inbox]\ndescription: first cut\ncover_url: https://e.example/c.jpg\n"
    )
    (ready,) = settle(make(defaults={"tags": ["inbox"], "description": "default"}), clock).ready
    assert ready.sidecar == folder / "intro.yaml"
    assert dict(ready.item.metadata) == {
        "title": "Our intro",
        "tags": ("inbox", "launch"),
        "description": "first cut",
        "cover_url": "https://e.example/c.jpg",
    }


def test_specific_sidecar_name_is_preferred() -> None:
    assert sidecar_names("clip.mp4") == ["clip.mp4.yaml", "clip.mp4.yml", "clip.yaml", "clip.yml"]


def test_pair_waits_for_the_sidecar_to_be_stable(env) -> None:
    folder, clock, _, make = env
    drop = make()
    (folder / "intro.mp4").write_bytes(b"v")
    drop.scan()
    clock.t += 5
    (folder / "intro.yaml").write_text("title: late\n")
    result = drop.scan()
    assert result.ready == [] and result.waiting == [folder / "intro.mp4"]
    clock.t += 5
    (ready,) = drop.scan().ready
    assert ready.item.metadata["title"] == "late"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("title: ok\ntags: launch\n", "intro.yaml:2: tags: expected a list of strings"),
        ("title: ok\ncate_id: '7'\n", "intro.yaml:2: cate_id: expected an integer"),
        ("title: ok\ntittle: typo\n", "intro.yaml:2: tittle: unknown field"),
        ("title: [unclosed\n", "intro.yaml:2: invalid YAML"),
        ("- just\n- a list\n", "intro.yaml:1: a sidecar must be a mapping"),
        ("title: ''\n", "intro.yaml:1: title: must not be empty"),
    ],
)
def test_invalid_sidecar_fails_the_pair_naming_file_line_field(env, text: str, expected: str) -> None:
    folder, clock, _, make = env
    (folder / "intro.mp4").write_bytes(b"v")
    (folder / "intro.yaml").write_text(text)
    drop = make(after="move")
    result = settle(drop, clock)
    assert result.ready == []
    (failure,) = result.failed
    assert failure.reason.startswith(expected), failure.reason
    dest = drop.finish_failure(failure)
    assert dest == folder / "failed" / "intro.mp4"
    assert (folder / "failed" / "intro.yaml").read_text() == text
    assert (folder / "failed" / "intro.mp4.reason.txt").read_text().startswith(expected)
    assert not (folder / "intro.mp4").exists() and not (folder / "intro.yaml").exists()


def test_sidecar_field_the_kind_does_not_take(env) -> None:
    folder, clock, _, make = env
    (folder / "logo.png").write_bytes(b"i")
    (folder / "logo.yaml").write_text("cover_url: https://e.example/x.jpg\n")
    (failure,) = settle(make(), clock).failed
    assert failure.reason == "logo.yaml: cover_url: image files do not take cover_url"


def test_sidecar_business_type_for_attached(env) -> None:
    folder, clock, _, make = env
    (folder / "mark.png").write_bytes(b"w")
    (folder / "mark.yaml").write_text("business_type: material\ntitle: Brand mark\n")
    (ready,) = settle(make(), clock).ready
    assert ready.item.kind is Kind.ATTACHED and ready.item.options["business_type"] == "material"
    assert "business_type" not in ready.item.metadata


# --- identity ----------------------------------------------------------------------------------


def test_name_follows_content_not_file_name(env) -> None:
    folder, clock, _, make = env
    drop = make()
    (folder / "a.mp4").write_bytes(b"same bytes")
    (first,) = settle(drop, clock).ready
    os.rename(folder / "a.mp4", folder / "renamed.mp4")
    (second,) = settle(drop, clock).ready
    assert second.item.name == first.item.name
    # A fresh DropFolder (a restart) names it the same.
    (third,) = settle(make(), clock).ready
    assert third.item.name == first.item.name


def test_two_copies_in_one_scan_are_one_candidate(env) -> None:
    folder, clock, _, make = env
    (folder / "a.mp4").write_bytes(b"dup")
    (folder / "b.mp4").write_bytes(b"dup")
    drop = make(after="move")
    (candidate,) = settle(drop, clock).ready
    assert candidate.path.name == "a.mp4" and [d.path.name for d in candidate.duplicates] == ["b.mp4"]
    drop.finish_success(candidate)
    assert sorted(p.name for p in (folder / "done").iterdir()) == ["a.mp4", "b.mp4"]


def test_hash_is_computed_once_per_unchanged_file(env) -> None:
    folder, clock, hasher, make = env
    drop = make()
    (folder / "a.mp4").write_bytes(b"1")
    settle(drop, clock)
    drop.scan()
    drop.scan()
    assert len(hasher.calls) == 1


# --- after -------------------------------------------------------------------------------------


def test_keep_remembers_until_the_file_changes(env) -> None:
    folder, clock, _, make = env
    drop = make(after="keep")
    media = folder / "a.mp4"
    media.write_bytes(b"1")
    (candidate,) = settle(drop, clock).ready
    assert drop.finish_success(candidate) == []
    assert media.exists()
    assert settle(drop, clock).ready == []
    media.write_bytes(b"22")
    os.utime(media, ns=(1, 1))
    (again,) = settle(drop, clock).ready
    assert again.item.name != candidate.item.name


def test_move_is_collision_safe_and_keeps_the_pair_together(env) -> None:
    folder, clock, _, make = env
    drop = make(after="move")
    (folder / "done").mkdir()
    (folder / "done" / "clip.mp4").write_bytes(b"older")
    (folder / "done" / "clip.yaml").write_text("title: older\n")
    (folder / "clip.mp4").write_bytes(b"new")
    (folder / "clip.yaml").write_text("title: newer\n")
    (candidate,) = settle(drop, clock).ready
    assert drop.finish_success(candidate) == [folder / "done" / "clip (2).mp4"]
    assert (folder / "done" / "clip (2).yaml").read_text() == "title: newer\n"
    assert (folder / "done" / "clip.mp4").read_bytes() == b"older"
    assert sorted(p.name for p in folder.iterdir()) == ["done"]


def test_shared_sidecar_stays_until_its_last_user_leaves(env) -> None:
    folder, clock, _, make = env
    drop = make(after="move")
    (folder / "movie.mp4").write_bytes(b"v")
    (folder / "movie.srt").write_bytes(b"s")
    (folder / "movie.yaml").write_text("tags: [feature]\n")
    ready = {c.path.name: c for c in settle(drop, clock).ready}
    drop.finish_success(ready["movie.mp4"])
    assert (folder / "movie.yaml").exists()
    assert (folder / "done" / "movie.yaml").exists()  # a copy travels with the video
    drop.finish_success(ready["movie.srt"])
    assert not (folder / "movie.yaml").exists()
    # done/movie.yaml (the copy) is taken, so the pair moves under one free name together.
    assert sorted(p.name for p in (folder / "done").iterdir()) == [
        "movie (2).srt",
        "movie (2).yaml",
        "movie.mp4",
        "movie.yaml",
    ]


def test_delete_removes_file_and_sidecar(env) -> None:
    folder, clock, _, make = env
    drop = make(after="delete")
    (folder / "a.mp4").write_bytes(b"1")
    (folder / "a.yaml").write_text("title: A\n")
    (candidate,) = settle(drop, clock).ready
    drop.finish_success(candidate)
    assert list(folder.iterdir()) == []


def test_failure_after_upload_error_goes_to_failed_with_reason(env) -> None:
    folder, clock, _, make = env
    drop = make(after="keep")
    (folder / "a.mp4").write_bytes(b"1")
    (candidate,) = settle(drop, clock).ready
    dest = drop.finish_failure(candidate, "InvalidFile.Damaged: the file is damaged")
    assert dest == folder / "failed" / "a.mp4"
    assert (
        folder / "failed" / "a.mp4.reason.txt"
    ).read_text() == "InvalidFile.Damaged: the file is damaged\n"
    # Same name again: no clobbering, each with its own reason.
    (folder / "a.mp4").write_bytes(b"2")
    drop.finish_failure(folder / "a.mp4", "again")
    assert (folder / "failed" / "a (2).mp4.reason.txt").read_text() == "again\n"


def test_symlinks_are_refused_not_followed(env, tmp_path: Path) -> None:
    folder, clock, hasher, make = env
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"private")
    (folder / "link.mp4").symlink_to(secret)
    drop = make()
    result = settle(drop, clock)
    assert result.ready == [] and hasher.calls == []
    (failure,) = result.failed
    assert "symbolic link" in failure.reason
    drop.finish_failure(failure)
    assert (folder / "failed" / "link.mp4").is_symlink() and secret.read_bytes() == b"private"


def test_unmovable_failure_is_not_reported_forever(env, monkeypatch) -> None:
    folder, clock, _, make = env
    drop = make()
    (folder / "notes.txt").write_bytes(b"t")
    (failure,) = settle(drop, clock).failed

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    import vodsync.desired.dropfolder as mod

    monkeypatch.setattr(mod._Subfolder, "move_in", refuse)
    assert drop.finish_failure(failure) is None
    assert settle(drop, clock).failed == []


def test_missing_folder_is_empty(tmp_path: Path) -> None:
    result = DropFolder(settings(tmp_path / "not-mounted-yet")).scan()
    assert result.ready == [] and result.failed == []


def test_a_configured_label_keeps_item_names_when_the_directory_moves(tmp_path: Path) -> None:
    old, new = tmp_path / "Incoming", tmp_path / "renamed" / "elsewhere"
    old.mkdir()
    (old / "clip.mp4").write_bytes(b"v")
    clock = Clock()
    before = DropFolder(settings(old, label="inbox", after="keep"), hash_file=CountingHash(), clock=clock)
    [first] = settle(before, clock).ready
    new.parent.mkdir()
    old.rename(new)
    after = DropFolder(settings(new, label="inbox", after="keep"), hash_file=CountingHash(), clock=clock)
    [second] = settle(after, clock).ready
    assert first.item.name == second.item.name == f"drop/inbox/{digest_of(b'v')[:16]}"
    assert after.origin == before.origin == "drop:inbox"
    # Without a label the name follows the directory, so a move would mean new items.
    assert DropFolder(settings(new)).label == "elsewhere"


def test_labels_must_be_unique(tmp_path: Path) -> None:
    (tmp_path / "a" / "inbox").mkdir(parents=True)
    (tmp_path / "b" / "Inbox").mkdir(parents=True)
    assert folder_label(Path("/srv/My Drop!")) == "my-drop"
    with pytest.raises(ConfigError, match="'inbox'"):
        drop_folders([settings(tmp_path / "a" / "inbox"), settings(tmp_path / "b" / "Inbox")])
    assert len(drop_folders([settings(tmp_path / "a" / "inbox")])) == 1
    # A label tells them apart.
    assert [f.label for f in drop_folders([settings(tmp_path / "a" / "inbox"),
                                           settings(tmp_path / "b" / "Inbox", label="inbox-b")])] == ["inbox", "inbox-b"]


def test_a_failed_folder_that_is_a_link_is_not_moved_into(env, tmp_path: Path) -> None:
    folder, clock, _, make = env
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "failed").symlink_to(outside)
    drop = make()
    (folder / "notes.txt").write_bytes(b"t")
    (failure,) = [f for f in settle(drop, clock).failed if f.path.name == "notes.txt"]
    assert drop.finish_failure(failure) is None
    assert list(outside.iterdir()) == [] and (folder / "notes.txt").exists()


def test_a_sidecar_with_a_repeated_key_fails_the_pair_at_its_line(env) -> None:
    folder, clock, _, make = env
    drop = make()
    (folder / "a.mp4").write_bytes(b"1")
    (folder / "a.yaml").write_text("title: One\ntags: [x]\ntitle: Two\n")
    (failure,) = settle(drop, clock).failed
    assert failure.reason.startswith("a.yaml:3: ") and "duplicate key 'title'" in failure.reason
