"""The daemon's Prometheus metrics, its health verdict, and the small HTTP server that exposes both.

Owns `Metrics` (the collectors, in a registry of their own so tests and
embedding never touch prometheus-client's global one), `Health` (healthy
while a reconcile succeeded within `grace_intervals` intervals, or since start
before the first one could have finished), `parse_listen` (the `daemon.http`
setting, loopback only unless explicitly allowed: /metrics names media and
actions, and there is no authentication) and `MetricsServer` (`/healthz`,
`/metrics`) running in a thread.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from vodsync.errors import ConfigError

log = logging.getLogger(__name__)

RECONCILE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """Every metric the daemon exports. Thread-safe (prometheus-client collectors are)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.items = Gauge("vodsync_items", "Items in the state file, by status.", ["status"], registry=r)
        self.uploads = Counter("vodsync_uploads", "Local files uploaded.", registry=r)
        self.upload_bytes = Counter("vodsync_upload_bytes", "Bytes uploaded to OSS.", registry=r)
        self.api_calls = Counter("vodsync_api_calls", "VOD API calls, by action.", ["action"], registry=r)
        self.api_errors = Counter(
            "vodsync_api_errors", "VOD API errors, by action and error code.", ["action", "code"], registry=r
        )
        self.reconciles = Counter(
            "vodsync_reconciles", "Reconcile runs, by outcome (ok|error).", ["outcome"], registry=r
        )
        self.reconcile_duration = Histogram(
            "vodsync_reconcile_duration_seconds",
            "Wall time of one reconcile run.",
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("vodsync_queue_depth", "Actions planned but not yet done.", registry=r)
        self.last_success = Gauge(
            "vodsync_last_success_timestamp_seconds",
            "Unix time of the last successful reconcile.",
            registry=r,
        )
        self.last_reconcile = Gauge(
            "vodsync_last_reconcile_timestamp_seconds",
            "Unix time of the last reconcile, any outcome.",
            registry=r,
        )
        self._statuses: set[str] = set()
        self._lock = threading.Lock()

    def set_items(self, counts: Mapping[str, int]) -> None:
        """Replace the per-status item counts; a status that disappeared drops to 0 rather than lingering."""
        with self._lock:
            for status in self._statuses - set(counts):
                self.items.labels(status=status).set(0)
            for status, n in counts.items():
                self.items.labels(status=str(status)).set(n)
            self._statuses |= {str(s) for s in counts}

    def api_call(self, action: str, error_code: str | None = None) -> None:
        self.api_calls.labels(action=action).inc()
        if error_code is not None:
            self.api_errors.labels(action=action, code=error_code).inc()

    def uploaded(self, nbytes: int) -> None:
        self.uploads.inc()
        self.upload_bytes.inc(nbytes)

    def reconciled(self, duration: float, *, ok: bool, at: float | None = None) -> None:
        at = time.time() if at is None else at
        self.reconcile_duration.observe(duration)
        self.reconciles.labels(outcome="ok" if ok else "error").inc()
        self.last_reconcile.set(at)
        if ok:
            self.last_success.set(at)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Health:
    """Whether the daemon is doing its job: a reconcile succeeded within `grace_intervals` intervals.

    Before the first success the daemon counts as healthy for the same window
    after start, so a slow first run is not reported as a failure.
    """

    def __init__(
        self, interval_seconds: float, *, grace_intervals: float = 3, clock: Callable[[], float] = time.time
    ) -> None:
        self.interval_seconds = interval_seconds
        self.grace_intervals = grace_intervals
        self._clock = clock
        self._lock = threading.Lock()
        self.started = clock()
        self.last_reconcile: float | None = None
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.state_error: str | None = None  # the state cannot be reached now (say, PostgreSQL is down)

    def state_reachable(self, error: str | None) -> None:
        """The state answered (None), or why it could not be reached: nothing is recorded while it
        cannot, so the daemon is unhealthy at once, whatever the grace window says."""
        with self._lock:
            self.state_error = error

    def reconciled(self, *, ok: bool, error: str | None = None, at: float | None = None) -> None:
        at = self._clock() if at is None else at
        with self._lock:
            self.last_reconcile = at
            if ok:
                self.last_success = at
                self.last_error = None
            else:
                self.last_error = error

    def report(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()
        with self._lock:
            since = self.last_success if self.last_success is not None else self.started
            recent = now - since <= self.grace_intervals * self.interval_seconds
            healthy = recent and self.state_error is None
            body: dict[str, Any] = {
                "status": "ok" if healthy else "unhealthy",
                "last_reconcile": _iso(self.last_reconcile),
                "last_success": _iso(self.last_success),
                "state": "reachable" if self.state_error is None else "unreachable",
            }
            if self.state_error is not None:
                body["reason"] = (f"the state cannot be reached: {self.state_error}; nothing new is started "
                                  "until it can, and what is under way is settled by the next run")
            elif not recent:
                body["reason"] = (
                    f"no successful reconcile for {now - since:.0f}s "
                    f"(limit {self.grace_intervals * self.interval_seconds:.0f}s)"
                )
            if self.last_error:
                body["last_error"] = self.last_error
        return healthy, body


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname: we cannot know what it resolves to, so it is not "loopback"


def parse_listen(value: str, *, allow_non_loopback: bool = False) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) -> (host, port); refuses a non-loopback host unless allowed."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"daemon.http: must be host:port such as 127.0.0.1:9101, got {value!r}")
    if not allow_non_loopback and not _is_loopback(host):
        raise ConfigError(
            f"daemon.http: {host} is not a loopback address; /metrics and /healthz have no "
            "authentication, so they bind 127.0.0.1 (or ::1) unless non-loopback binding is explicitly allowed"
        )
    return host, int(port)


# How long a client may take to send its request (and read the answer): Prometheus and a
# health check need milliseconds.
READ_TIMEOUT_SECONDS = 10.0


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "vodsync"
    sys_version = ""

    def setup(self) -> None:
        # A socket timeout for the whole exchange: a client that sends half a request and
        # goes idle is dropped instead of holding its thread forever.
        self.timeout = self.server.read_timeout
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming convention
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            healthy, body = self.server.health.report()
            self._send(200 if healthy else 503, "application/json", json.dumps(body).encode() + b"\n")
        elif path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, self.server.metrics.exposition())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /healthz or /metrics\n")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class signature
        log.debug("http %s " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics
    health: Health
    read_timeout: float


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves `/healthz` and `/metrics` from a background thread. `port=0` picks a free port."""

    def __init__(
        self,
        metrics: Metrics,
        health: Health,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_non_loopback: bool = False,
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        if not allow_non_loopback and not _is_loopback(host):
            raise ConfigError(f"refusing to serve metrics on non-loopback address {host}")
        self.metrics = metrics
        self.health = health
        self.host = host
        self.port = port
        self.read_timeout = read_timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_setting(
        cls, value: str, metrics: Metrics, health: Health, *, allow_non_loopback: bool = False
    ) -> MetricsServer:
        host, port = parse_listen(value, allow_non_loopback=allow_non_loopback)
        return cls(metrics, health, host, port, allow_non_loopback=allow_non_loopback)

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("metrics server is not running")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        if self._server is not None:
            return
        server_class = _Server6 if ":" in self.host else _Server
        try:
            server = server_class((self.host, self.port), _Handler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        server.metrics = self.metrics
        server.health = self.health
        server.read_timeout = self.read_timeout
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="vodsync-metrics", daemon=True)
        self._thread.start()
        log.info("serving /healthz and /metrics on %s", self.url)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
