"""Metrics and health over real HTTP requests to the daemon's loopback server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY

from vodsync.daemon.metrics import Health, Metrics, MetricsServer, parse_listen
from vodsync.errors import ConfigError


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def served():
    clock = FakeClock()
    metrics = Metrics()
    health = Health(60, clock=clock)
    server = MetricsServer(metrics, health)
    server.start()
    yield server, metrics, health, clock
    server.stop()


def test_metrics_endpoint_exposes_every_family(served) -> None:
    server, metrics, _, _ = served
    metrics.set_items({"ready": 3, "failed": 1})
    metrics.api_call("CreateUploadVideo")
    metrics.api_call("CreateUploadVideo", "Throttling.User")
    metrics.uploaded(1024)
    metrics.reconciled(2.5, ok=True, at=1_700_000_000)
    metrics.queue_depth.set(7)
    status, ctype, body = get(server.url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    for line in (
        'vodsync_items{status="ready"} 3.0',
        'vodsync_items{status="failed"} 1.0',
        'vodsync_api_calls_total{action="CreateUploadVideo"} 2.0',
        'vodsync_api_errors_total{action="CreateUploadVideo",code="Throttling.User"} 1.0',
        "vodsync_uploads_total 1.0",
        "vodsync_upload_bytes_total 1024.0",
        "vodsync_reconcile_duration_seconds_count 1.0",
        "vodsync_queue_depth 7.0",
        "vodsync_last_success_timestamp_seconds 1.7e+09",
        'vodsync_reconciles_total{outcome="ok"} 1.0',
    ):
        assert line in body.splitlines(), line


def test_status_that_disappears_drops_to_zero() -> None:
    metrics = Metrics()
    metrics.set_items({"uploading": 2})
    metrics.set_items({"ready": 2})
    body = metrics.exposition().decode()
    assert 'vodsync_items{status="uploading"} 0.0' in body
    assert 'vodsync_items{status="ready"} 2.0' in body


def test_uses_its_own_registry() -> None:
    Metrics()
    Metrics()  # a second instance would raise "Duplicated timeseries" in the global registry
    assert "vodsync_items" not in {m.name for m in REGISTRY.collect()}


def test_healthz_ok_then_unhealthy_after_three_intervals(served) -> None:
    server, _, health, clock = served
    status, ctype, body = get(server.url + "/healthz")
    assert status == 200 and ctype == "application/json"
    assert json.loads(body) == {"status": "ok", "last_reconcile": None, "last_success": None, "state": "reachable"}

    health.reconciled(ok=True)
    clock.t += 120
    health.reconciled(ok=False, error="Throttling.User: slow down")
    status, _, body = get(server.url + "/healthz")
    data = json.loads(body)
    assert status == 200 and data["status"] == "ok"
    assert data["last_success"] == "2023-11-14T22:13:20Z"
    assert data["last_reconcile"] == "2023-11-14T22:15:20Z"

    clock.t += 61  # 181 s since the last success > 3 x 60 s
    status, _, body = get(server.url + "/healthz")
    data = json.loads(body)
    assert status == 503 and data["status"] == "unhealthy"
    assert "no successful reconcile" in data["reason"] and data["last_error"].startswith("Throttling")


def test_never_succeeding_becomes_unhealthy() -> None:
    clock = FakeClock()
    health = Health(10, clock=clock)
    assert health.report()[0]
    clock.t += 31
    assert not health.report()[0]


def test_unknown_path_and_head(served) -> None:
    server, *_ = served
    assert get(server.url + "/")[0] == 404
    req = urllib.request.Request(server.url + "/healthz", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b""


def test_binds_loopback_and_stops(served) -> None:
    server, *_ = served
    host, port = server.address
    assert host == "127.0.0.1" and port > 0
    url = server.url
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=2)
    server.stop()  # idempotent


def test_parse_listen_refuses_non_loopback() -> None:
    assert parse_listen("127.0.0.1:9101") == ("127.0.0.1", 9101)
    assert parse_listen("localhost:9101") == ("localhost", 9101)
    assert parse_listen("[::1]:9101") == ("::1", 9101)
    for value in ("0.0.0.0:9101", "192.168.1.5:80", "example.com:80", "[::]:9101"):
        with pytest.raises(ConfigError, match="loopback"):
            parse_listen(value)
    assert parse_listen("0.0.0.0:9101", allow_non_loopback=True) == ("0.0.0.0", 9101)
    for value in ("9101", "127.0.0.1:", "127.0.0.1:99999", ":80"):
        with pytest.raises(ConfigError):
            parse_listen(value)
    with pytest.raises(ConfigError):
        MetricsServer(Metrics(), Health(60), "0.0.0.0", 0)


def test_from_setting_and_port_in_use() -> None:
    metrics, health = Metrics(), Health(60)
    first = MetricsServer.from_setting("127.0.0.1:0", metrics, health)
    first.start()
    try:
        clash = MetricsServer(metrics, health, "127.0.0.1", first.address[1])
        with pytest.raises(ConfigError, match="cannot listen"):
            clash.start()
    finally:
        first.stop()
