"""Security: path confinement, no secret in anything a run writes, private files, and broken
inputs (manifests, drop-folder sidecars) that fail cleanly before any API call.

The secret test collects every credential the run could have seen: the account
AccessKeySecret, and every STS AccessKeySecret/SecurityToken the emulator minted
(wrapped at `sts.mint`), plus the base64 UploadAuth blobs the API returned. It then
greps stdout, stderr, the state file (with its WAL), checkpoints and a log file of
runs at every log level and format: apply, plan --json, status --json, a failing
run, and a run killed mid-upload.
"""

from __future__ import annotations

import base64
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetykit import Library, SourceServer, mp4

from vodsync.config import DropFolderSettings
from vodsync.desired.dropfolder import DropFolder
from vodsync.emulator import Emulator

PART = 128 * 1024


@pytest.fixture
def lib(tmp_path: Path, emulator: Emulator, sources: SourceServer) -> Library:
    return Library(tmp_path, emulator, sources)


# ---------------------------------------------------------------- path confinement


@pytest.mark.parametrize("bad", [
    "../../../../../../etc/shadow.mp4",
    "../../outside.mp4",
    "/etc/passwd.mp4",
    "link-out/secret.mp4",
    "escape.mp4",
])
def test_paths_outside_the_repository_are_refused(lib: Library, emulator: Emulator, tmp_path: Path,
                                                  bad: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(mp4(100))
    (tmp_path / "outside.mp4").write_bytes(mp4(100))
    (lib.manifests / "link-out").symlink_to(outside, target_is_directory=True)
    (lib.manifests / "escape.mp4").symlink_to(outside / "secret.mp4")
    lib.file("media/ok.mp4", mp4(100))
    (lib.manifests / "m.yaml").write_text(
        "media:\n"
        "  - {name: ok, type: video, file: media/ok.mp4}\n"
        f"  - {{name: bad, type: video, file: '{bad}'}}\n")
    before = emulator.calls()
    for command in ("validate", "plan", "apply"):
        run = lib.cli(command)
        assert run.code != 0, run
        assert "outside the allowed roots" in run.err and "m.yaml:3" in run.err, run
        assert "Traceback" not in run.err + run.out
    assert emulator.calls() == before, "a refused path stops the run before any API call"
    assert lib.records() == {}


def test_configured_roots_allow_a_media_directory_outside_the_repository(lib: Library, tmp_path: Path) -> None:
    media = tmp_path / "nas"
    media.mkdir()
    (media / "clip.mp4").write_bytes(mp4(100))
    (lib.manifests / "m.yaml").write_text(f"media:\n  - {{name: nas, type: video, file: '{media}/clip.mp4'}}\n")
    assert lib.cli("validate").code != 0
    config = tmp_path / "vodsync.yaml"
    config.write_text(f"roots: ['{lib.repo}', '{media}']\n")
    run = lib.cli("validate", "--config", str(config))
    assert run.code == 0, run
    # ... and a symlink inside that root pointing back out is still refused.
    (media / "sneaky.mp4").symlink_to("/etc/hostname")
    (lib.manifests / "m.yaml").write_text(f"media:\n  - {{name: s, type: video, file: '{media}/sneaky.mp4'}}\n")
    run = lib.cli("validate", "--config", str(config))
    assert run.code != 0 and "outside the allowed roots" in run.err, run


# ---------------------------------------------------------------- secrets


class Minted:
    """Every UploadAuth the emulator hands out, by wrapping its StsIssuer."""

    def __init__(self, emulator: Emulator) -> None:
        self.tokens: list[dict] = []
        self._real = emulator.sts.mint

        def mint(*args, **kwargs):
            auth = self._real(*args, **kwargs)
            self.tokens.append(dict(auth))
            return auth

        emulator.sts.mint = mint  # type: ignore[method-assign]
        self._emulator = emulator

    def secrets(self) -> set[str]:
        out = {"emulator-secret"}
        for t in self.tokens:
            out |= {t["AccessKeySecret"], t["SecurityToken"]}
        return out

    def restore(self) -> None:
        self._emulator.sts.mint = self._real  # type: ignore[method-assign]


@pytest.fixture
def minted(emulator: Emulator):
    m = Minted(emulator)
    yield m
    m.restore()


def _upload_auth_blobs(texts: list[str]) -> list[str]:
    """base64 strings in `texts` that decode to JSON holding a credential (an UploadAuth)."""
    import re

    found = []
    for text in texts:
        for blob in re.findall(r"[A-Za-z0-9+/]{40,}={0,2}", text):
            try:
                decoded = base64.b64decode(blob + "=" * (-len(blob) % 4)).decode("utf-8", "replace")
            except ValueError:
                continue
            if "SecurityToken" in decoded or "AccessKeySecret" in decoded:
                found.append(blob)
    return found


def _files_under(*roots: Path) -> list[Path]:
    out = []
    for root in roots:
        if root.is_file():
            out.append(root)
        elif root.is_dir():
            out += [p for p in root.rglob("*") if p.is_file()]
    return out


def test_no_secret_in_anything_a_runwrites(lib: Library, emulator: Emulator, minted: Minted,
                                            tmp_path: Path) -> None:
    items = lib.mixed(videos=3, big=1, images=2, attached=2, urls=2, registers=1)
    lib.write(items)
    tuning = ("--part-size", str(PART), "--multipart-threshold", str(2 * PART))
    texts: list[str] = []
    runs = []

    # A run killed mid-upload leaves checkpoints and an unfinished state behind; check those too.
    emulator.set_faults([{"match": "oss:PUT", "error": "slow", "delay_ms": 200}])
    log = tmp_path / "killed.log"
    proc = lib.spawn("apply", *tuning, "--log-level", "debug", "--log-format", "json", log=log)
    deadline = time.monotonic() + 30
    cps = lib.state.parent / (lib.state.name + ".checkpoints")
    while time.monotonic() < deadline and not any(p.is_file() for p in cps.rglob("*")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    checkpoint_texts = [p.read_bytes().decode("utf-8", "replace") for p in _files_under(cps)]
    assert checkpoint_texts, "the killed run left a checkpoint to inspect"
    emulator.set_faults([])

    # A failing run: every image create fails.
    emulator.set_faults([{"match": "CreateUploadImage", "error": "Forbidden", "status": 403,
                          "message": "denied; AccessKeySecret=emulator-secret"}])
    runs.append(lib.cli("apply", *tuning, "--log-level", "debug", "--log-format", "text"))
    assert runs[-1].code == 1, runs[-1]
    emulator.set_faults([])
    for fmt in ("json", "text"):
        runs.append(lib.cli("apply", *tuning, "--log-level", "debug", "--log-format", fmt, "--wait", "20"))
    assert runs[-1].code == 0, runs[-1]
    runs.append(lib.cli("plan", "--json", "--log-level", "debug"))
    runs.append(lib.cli("plan", "--refresh", "--log-level", "debug", "--log-format", "json"))
    runs.append(lib.cli("status", "--json", "--log-level", "debug"))
    runs.append(lib.cli("gc", "--log-level", "debug"))
    for r in runs:
        texts += [r.out, r.err]
    texts.append(log.read_bytes().decode("utf-8", "replace"))
    texts += checkpoint_texts
    state_files = _files_under(lib.state.parent)
    texts += [p.read_bytes().decode("latin-1") for p in state_files]

    secrets = minted.secrets()
    assert len(minted.tokens) >= 8, "the runs did receive upload credentials"
    leaks = [(s[:12] + "...", i) for s in secrets for i, t in enumerate(texts) if s in t]
    assert not leaks, leaks
    assert not _upload_auth_blobs(texts)
    for t in texts:
        assert "Signature=" not in t.replace("Signature=***", "") and "OSSAccessKeyId=" not in t
    assert any("DEBUG" in r.err or '"level": "debug"' in r.err for r in runs), "debug logging was on"


# ---------------------------------------------------------------- file modes


def test_state_and_checkpoints_are_private(lib: Library, emulator: Emulator, tmp_path: Path) -> None:
    items = lib.mixed(videos=1, big=1, images=0, attached=0, urls=0, registers=0)
    lib.write(items)
    emulator.set_faults([{"match": "oss:PUT", "error": "slow", "delay_ms": 300}])
    proc = lib.spawn("apply", "--part-size", str(PART), "--multipart-threshold", str(2 * PART))
    cps = lib.state.parent / (lib.state.name + ".checkpoints")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(p.is_file() for p in cps.rglob("*")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    emulator.set_faults([])
    files = _files_under(lib.state.parent)
    assert any(p.parent.name == ".py-oss-upload" for p in files)
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for d in [lib.state.parent, *[p for p in cps.rglob("*") if p.is_dir()], cps]:
        assert stat.S_IMODE(d.stat().st_mode) & 0o077 == 0, d


def test_a_config_holding_a_secret_must_not_be_readable_by_others(lib: Library, tmp_path: Path) -> None:
    config = tmp_path / "vodsync.yaml"
    config.write_text("credentials:\n  access_key_id: LTAIexample\n  access_key_secret: s3cr3t-value\n")
    config.chmod(0o644)
    run = lib.cli("plan", "--config", str(config))
    assert run.code != 0 and "s3cr3t-value" not in run.out + run.err, run
    assert "chmod 600" in run.err or "readable" in run.err, run
    config.chmod(0o600)
    assert lib.cli("validate", "--config", str(config)).code == 0
    # Without a secret, a world-readable config is fine.
    config.write_text("prune: false\n")
    config.chmod(0o644)
    assert lib.cli("validate", "--config", str(config)).code == 0


# ---------------------------------------------------------------- broken inputs, zero calls


def test_broken_manifest_makes_no_api_call(lib: Library, emulator: Emulator) -> None:
    lib.file("media/a.mp4", mp4(100))
    (lib.manifests / "a.yaml").write_text("media:\n  - {name: a, type: video, file: media/a.mp4}\n")
    (lib.manifests / "b.yaml").write_text("media:\n  - {name: b, type: vidoe, file: media/a.mp4}\n")
    for command in ("plan", "apply"):
        run = lib.cli(command, "--refresh")
        assert run.code != 0 and "b.yaml:2" in run.err and "Traceback" not in run.err, run
    assert emulator.calls() == {}
    assert lib.records() == {}


_SIDECAR_KEYS = ["title", "description", "tags", "cate_id", "cover_url", "template_group_id", "tittle",
                 "business_type", "", "type", "name"]
_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                     st.floats(allow_nan=True), st.text(max_size=300), st.binary(max_size=20).map(repr))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=20),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                       max_leaves=30)
_sidecar_docs = st.one_of(
    st.dictionaries(st.sampled_from(_SIDECAR_KEYS), _values, max_size=6),
    _values,
)


def _as_yaml(doc: object) -> str:
    import yaml

    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return repr(doc)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.one_of(
    _sidecar_docs.map(_as_yaml),
    st.text(max_size=400),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.builds(lambda d, cut: _as_yaml(d)[:cut], _sidecar_docs, st.integers(0, 200)),
))
def test_sidecars_fail_cleanly_with_their_location(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    """Every sidecar is either valid metadata or one located reason (`clip.yaml:LINE: ...`);
    the scan never raises. Nothing here can call the API: a failure is reported, not ingested."""
    folder = tmp_path_factory.mktemp("drop")
    (folder / "clip.mp4").write_bytes(b"v")
    (folder / "clip.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    now = [1000.0]
    drop = DropFolder(DropFolderSettings.model_validate({"path": str(folder), "stable_seconds": 0},
                                                        strict=False),
                      clock=lambda: now[0])
    drop.scan()
    now[0] += 1
    result = drop.scan()
    assert len(result.ready) + len(result.failed) == 1, result
    if result.failed:
        reason = result.failed[0].reason
        assert reason.startswith("clip.yaml:"), reason
        line = reason.split(":")[1]
        assert line.isdigit() and int(line) >= 1, reason
        assert "Traceback" not in reason and len(reason) < 4000

