"""sd_notify against a real AF_UNIX datagram socket (path and abstract namespace)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from vodsync.daemon.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # AF_UNIX paths are limited to ~108 bytes; pytest's tmp_path can be longer.
    path = tmp_path / "n.sock"
    if len(str(path)) > 100:
        path = Path("/tmp") / f"vodsync-notify-{uuid.uuid4().hex[:8]}.sock"
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()
    path.unlink(missing_ok=True)


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_messages_reach_a_path_socket(listener) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.ready("watching 2 folders")
    assert receive(sock) == ["READY=1", "STATUS=watching 2 folders"]
    assert notifier.watchdog()
    assert receive(sock) == ["WATCHDOG=1"]
    assert notifier.stopping()
    assert receive(sock) == ["STOPPING=1"]
    assert notifier.status("reconciling")
    assert receive(sock) == ["STATUS=reconciling"]
    assert notifier.reloading()
    first, second = receive(sock)
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=") and int(second.split("=")[1]) > 0


def test_status_cannot_inject_another_assignment(listener) -> None:
    sock, path = listener
    Notifier(path).status("bad\nREADY=1")
    assert receive(sock) == ["STATUS=bad READY=1"]


def test_abstract_socket() -> None:
    name = f"vodsync-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100) == b"READY=1"


def test_noop_without_socket() -> None:
    notifier = Notifier.from_env({})
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None


def test_unreachable_socket_is_not_an_error(tmp_path: Path) -> None:
    assert Notifier(str(tmp_path / "missing.sock")).ready() is False


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert Notifier.from_env({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 15.0
    assert (
        Notifier.from_env({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval()
        == 15.0
    )
    # Meant for another process (e.g. inherited by a child): not ours to feed.
    assert Notifier.from_env({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier.from_env({"WATCHDOG_USEC": "junk"}).watchdog_interval() is None
