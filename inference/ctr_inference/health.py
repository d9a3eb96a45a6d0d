"""The worker's HTTP endpoints: liveness, readiness and Prometheus metrics.

- ``/healthz`` (liveness): 200 while the receive loop makes progress. It turns
  503 when the loop has not come back for longer than its stall limit, or a
  partition has been held longer than ``MAX_PARTITION_SECONDS``, so the kubelet
  restarts a hung worker and its message reappears on the queue.
- ``/readyz`` (readiness): 200 only after the model bundle is loaded and
  verified, and 503 again once the worker drains after SIGTERM. The body is
  a JSON object with the reason, the model version and the scoring engine,
  and why the engine fell back to LightGBM when it did.
- ``/metrics``: Prometheus text format from the worker's own registry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

logger = logging.getLogger(__name__)

# Partition scoring times span tiny test partitions to partitions of millions of rows.
SCORING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)


class WorkerMetrics:
    """The worker's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.partitions_scored = Counter(
            "ctr_worker_partitions_scored", "Partitions scored and written", registry=self.registry)
        self.rows_scored = Counter("ctr_worker_rows_scored", "Rows scored and written", registry=self.registry)
        self.failures = Counter(
            "ctr_worker_partition_failures", "Messages that failed and were released, by reason",
            ["reason"], registry=self.registry)
        self.scoring_seconds = Histogram(
            "ctr_worker_scoring_seconds", "Seconds from receiving a message to writing its output",
            buckets=SCORING_BUCKETS, registry=self.registry)
        self.in_flight = Gauge(
            "ctr_worker_messages_in_flight", "Messages received and not yet deleted or released",
            registry=self.registry)
        self.released = Counter(
            "ctr_worker_messages_released", "Messages made visible again, by cause", ["cause"],
            registry=self.registry)
        self.runs_completed = Counter(
            "ctr_worker_runs_completed", "Runs whose manifest this worker wrote, by outcome", ["outcome"],
            registry=self.registry)
        self.model = Info("ctr_worker_model", "The model this worker serves and the image it runs in",
                          registry=self.registry)
        self.input_wait_seconds = Counter(
            "ctr_worker_input_wait_seconds",
            "Seconds the scoring thread waited for the input of a received message (prefetch not ready)",
            registry=self.registry)
        self.upload_wait_seconds = Counter(
            "ctr_worker_upload_wait_seconds",
            "Seconds the scoring thread waited for the previous partition's upload to finish",
            registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class HealthState:
    """State behind the probes: the worker updates it and the HTTP threads read it."""

    def __init__(self, stall_seconds: float, max_partition_seconds: float):
        self.stall_seconds = stall_seconds
        self.max_partition_seconds = max_partition_seconds
        self._lock = threading.Lock()
        self._ready = False
        self._draining = False
        self._loop_tick = time.monotonic()
        self._held_since: float | None = None
        self._serving: dict = {}

    def set_ready(self, ready: bool, serving: dict | None = None) -> None:
        """Set readiness; ``serving`` describes the model and engine for the ``/readyz`` body."""
        with self._lock:
            self._ready = ready
            if serving is not None:
                self._serving = dict(serving)

    def set_draining(self) -> None:
        with self._lock:
            self._draining = True

    def tick(self) -> None:
        """Record that the receive loop came back; call once per loop iteration."""
        with self._lock:
            self._loop_tick = time.monotonic()

    def hold(self, holding: bool) -> None:
        """Record that a partition is (or no longer is) being processed."""
        with self._lock:
            self._held_since = time.monotonic() if holding else None
            self._loop_tick = time.monotonic()

    def liveness(self) -> tuple[bool, str]:
        with self._lock:
            now = time.monotonic()
            if self._held_since is not None:
                held = now - self._held_since
                if held > self.max_partition_seconds:
                    return False, f"one partition held for {held:.0f} s, above MAX_PARTITION_SECONDS"
                return True, "scoring"
            idle = now - self._loop_tick
            if idle > self.stall_seconds:
                return False, f"receive loop stalled for {idle:.0f} s"
            return True, "receiving"

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            if self._draining:
                return False, "draining after SIGTERM"
            if not self._ready:
                return False, "model bundle not loaded yet"
            return True, "model bundle loaded and verified"

    def readiness_document(self) -> tuple[bool, dict]:
        """Return readiness and the ``/readyz`` body: the reason and what the worker serves."""
        ready, reason = self.readiness()
        with self._lock:
            return ready, dict(self._serving, ready=ready, reason=reason)


class HealthServer:
    """Serves the probes and metrics from a daemon thread."""

    def __init__(self, host: str, port: int, state: HealthState, metrics: WorkerMetrics):
        self.state, self.metrics = state, metrics
        handler = _handler_class(state, metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> HealthServer:
        self._thread.start()
        logger.info("health and metrics endpoints on port %d", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_class(state: HealthState, metrics: WorkerMetrics):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._probe(*state.liveness())
            elif path == "/readyz":
                ready, document = state.readiness_document()
                body = (json.dumps(document, sort_keys=True) + "\n").encode()
                self._send(200 if ready else 503, body, "application/json")
            else:
                self._send(404, b"not found: use /healthz, /readyz or /metrics\n", "text/plain")

        def _probe(self, ok: bool, reason: str) -> None:
            self._send(200 if ok else 503, f"{'ok' if ok else 'not ok'}: {reason}\n".encode(), "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            # Probes arrive every few seconds; logging each would drown the partition logs.
            return

    return Handler
