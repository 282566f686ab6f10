"""The systemd unit: parsed in Python (always) for the directives the daemon relies on, and by systemd-analyze when present."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "vodsync.service"
ENV_EXAMPLE = ROOT / "systemd" / "vodsync.env.example"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: sections, repeatable keys, `\\` line continuation, # and ; comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    assert key in service, f"{key}= missing"
    return service[key][-1]  # the last assignment wins


def yes(value: str) -> bool:
    return value.lower() in ("yes", "true", "1", "on")


def test_notify_and_lifecycle(service) -> None:
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert re.fullmatch(r"\d+(s|min)?", one(service, "WatchdogSec"))
    assert one(service, "Restart") == "on-failure"
    assert one(service, "ExecStart") == "/usr/local/bin/vodsync watch --config /etc/vodsync/vodsync.yaml"
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert re.fullmatch(r"\d+(s|min)?", one(service, "TimeoutStopSec"))


def test_identity_and_state(service) -> None:
    dynamic = yes(service.get("DynamicUser", ["no"])[-1])
    assert dynamic or (one(service, "User") == "vodsync" and one(service, "Group") == "vodsync")
    assert one(service, "StateDirectory") == "vodsync"
    assert one(service, "User") != "root"


def test_sandbox(service) -> None:
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "ProtectHome") in ("read-only", "yes", "true", "tmpfs")
    writable = {p.lstrip("-") for v in service["ReadWritePaths"] for p in v.split()}
    assert {"/var/lib/vodsync", "/srv/vodsync/drop"} <= writable
    for key in (
        "PrivateTmp",
        "NoNewPrivileges",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ):
        assert yes(one(service, key)), key
    assert set(one(service, "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert one(service, "CapabilityBoundingSet") == "", "the daemon needs no capabilities"
    assert "@system-service" in service["SystemCallFilter"]


def test_credentials_come_from_a_file_never_the_command_line(service) -> None:
    sources = service.get("EnvironmentFile", []) + service.get("LoadCredential", [])
    assert any("/etc/vodsync/credentials.env" in s for s in sources)
    secretish = re.compile(r"(secret|token|password|access.?key|LTAI[0-9A-Za-z]+)", re.IGNORECASE)
    for key in ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload", "Environment"):
        for value in service.get(key, []):
            assert not secretish.search(value), f"{key}= carries something secret-looking: {value}"


def test_env_example_has_placeholders_only() -> None:
    text = ENV_EXAMPLE.read_text()
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "VODSYNC_ENDPOINT"):
        assert name in text
    values = dict(
        line.lstrip("#").split("=", 1) for line in text.splitlines() if re.match(r"#?[A-Z_]+=", line)
    )
    assert "REPLACE" in values["ALIBABA_CLOUD_ACCESS_KEY_ID"]
    assert "REPLACE" in values["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
    # A real AccessKey ID is LTAI + 12-30 alphanumerics; the placeholder must not look like one.
    assert not re.fullmatch(r"LTAI[0-9A-Za-z]{12,30}", values["ALIBABA_CLOUD_ACCESS_KEY_ID"])


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the Python checks above still ran)")
    # verify insists ExecStart's binary exists; vodsync is not installed at /usr/local/bin here.
    text = UNIT.read_text()
    if not Path("/usr/local/bin/vodsync").exists():
        text = text.replace("/usr/local/bin/vodsync", shutil.which("true") or "/bin/true")
    copy = tmp_path / "vodsync.service"
    copy.write_text(text)
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        # Host-specific noise about *other* units on this machine is not about our file.
        if "vodsync.service" in line
    ]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr
