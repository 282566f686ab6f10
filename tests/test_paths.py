"""Path confinement: a manifest from an untrusted pull request cannot name files outside the roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vodsync.desired.loader import load_manifests
from vodsync.desired.paths import PathConfiner, default_roots, repository_root
from vodsync.errors import ManifestError, PathNotAllowed


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # problems name manifests relative to the working directory
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "manifests" / "media").mkdir(parents=True)
    (repo / "manifests" / "media" / "ok.mp4").write_bytes(b"ok")
    (repo / "assets").mkdir()
    (repo / "assets" / "shared.mp4").write_bytes(b"shared")
    (tmp_path / "secret.mp4").write_bytes(b"secret")
    return tmp_path


def refused(repo: Path, file_value: str, **kw) -> str:
    (repo / "manifests" / "a.yaml").write_text(
        f"media:\n  - name: x\n    type: video\n    file: {file_value}\n"
    )
    with pytest.raises(ManifestError) as caught:
        load_manifests(repo / "manifests", **kw)
    (problem,) = caught.value.problems
    assert (problem.location.file, problem.location.line, problem.field) == ("repo/manifests/a.yaml", 4, "x.file")
    return problem.message


def test_repository_root_is_the_nearest_git_ancestor(layout):
    repo = layout / "repo"
    assert repository_root(repo / "manifests") == repo.resolve()
    assert default_roots(repo / "manifests") == [repo.resolve()]
    plain = layout / "plain"
    plain.mkdir()
    assert default_roots(plain) == [plain.resolve()]


def test_paths_inside_the_repository_are_fine_even_through_dotdot(layout):
    repo = layout / "repo"
    (repo / "manifests" / "a.yaml").write_text(
        "media:\n  - {name: a, type: video, file: media/ok.mp4}\n  - {name: b, type: video, file: ../assets/shared.mp4}\n"
    )
    items = load_manifests(repo / "manifests")
    assert [i.source for i in items] == [
        str((repo / "manifests/media/ok.mp4").resolve()),
        str((repo / "assets/shared.mp4").resolve()),
    ]


@pytest.mark.parametrize(
    "value", ["../../secret.mp4", "../../../../../../etc/passwd.mp4", "media/../../../secret.mp4"]
)
def test_dotdot_escapes_are_refused(layout, value):
    message = refused(layout / "repo", value)
    assert "outside the allowed roots" in message and value in message
    assert str((layout / "repo").resolve()) in message


def test_absolute_paths_outside_are_refused_inside_are_fine(layout):
    repo = layout / "repo"
    message = refused(repo, str(layout / "secret.mp4"))
    assert f"resolves to {(layout / 'secret.mp4').resolve()}" in message
    (repo / "manifests" / "a.yaml").write_text(
        f"media: [{{name: a, type: video, file: {repo / 'assets/shared.mp4'}}}]"
    )
    (item,) = load_manifests(repo / "manifests")
    assert item.local is not None and item.local.size == 6


def test_a_symlink_escaping_the_roots_is_refused(layout):
    repo = layout / "repo"
    os.symlink(layout / "secret.mp4", repo / "manifests" / "media" / "innocent.mp4")
    message = refused(repo, "media/innocent.mp4")
    assert f"resolves to {(layout / 'secret.mp4').resolve()}" in message


def test_a_symlinked_directory_escaping_the_roots_is_refused(layout):
    repo = layout / "repo"
    (layout / "outside").mkdir()
    (layout / "outside" / "v.mp4").write_bytes(b"v")
    os.symlink(layout / "outside", repo / "manifests" / "media" / "linkdir")
    assert "outside the allowed roots" in refused(repo, "media/linkdir/v.mp4")


def test_a_symlink_inside_the_roots_is_followed(layout):
    repo = layout / "repo"
    os.symlink(repo / "assets" / "shared.mp4", repo / "manifests" / "media" / "alias.mp4")
    (repo / "manifests" / "a.yaml").write_text("media: [{name: a, type: video, file: media/alias.mp4}]")
    (item,) = load_manifests(repo / "manifests")
    assert item.source == str((repo / "assets" / "shared.mp4").resolve())


def test_configured_roots_replace_the_default(layout):
    repo = layout / "repo"
    # Only manifests/media allowed: ../assets is now outside.
    message = refused(repo, "../assets/shared.mp4", roots=[repo / "manifests" / "media"])
    assert str((repo / "manifests" / "media").resolve()) in message
    # A root that includes the outside file lets it through.
    (repo / "manifests" / "a.yaml").write_text(
        f"media: [{{name: a, type: video, file: {layout / 'secret.mp4'}}}]"
    )
    assert load_manifests(repo / "manifests", roots=[repo, layout])


def test_a_manifest_file_symlinked_from_outside_is_refused(layout):
    repo = layout / "repo"
    (layout / "evil.yaml").write_text("media: []\n")
    os.symlink(layout / "evil.yaml", repo / "manifests" / "evil.yaml")
    with pytest.raises(ManifestError, match="outside the manifests directory and the allowed roots"):
        load_manifests(repo / "manifests")


def test_a_root_prefix_is_not_a_parent(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo-evil").mkdir()
    with pytest.raises(PathNotAllowed):
        PathConfiner([tmp_path / "repo"]).resolve(".", str(tmp_path / "repo-evil" / "x.mp4"))
    assert PathConfiner([tmp_path / "repo"]).resolve(str(tmp_path / "repo"), "x.mp4")[0] == str(
        (tmp_path / "repo" / "x.mp4").resolve()
    )


def test_confiner_reports_stat_of_regular_files_only(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"abc")
    os.symlink(tmp_path / "a.mp4", tmp_path / "l.mp4")
    confiner = PathConfiner([tmp_path])
    real, info = confiner.resolve(str(tmp_path), "a.mp4")
    assert info is not None and info.st_size == 3
    real_link, info_link = confiner.resolve(str(tmp_path), "l.mp4")
    assert real_link == real and info_link is None  # callers stat the target themselves
    assert confiner.resolve(str(tmp_path), "missing.mp4")[1] is None
