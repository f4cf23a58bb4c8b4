"""Prometheus metrics and the /healthz and /readyz endpoints.

Each worker owns a `Metrics` on its own registry (so several workers can live in one test process). Counters
are updated once per batch, not per message, to keep the hot path free of label lookups.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "tickpipe_messages_consumed", "Messages consumed from Kafka", ["topic"], registry=r
        )
        self.stored = Counter(
            "tickpipe_messages_stored", "Documents newly inserted into MongoDB", ["topic"], registry=r
        )
        self.duplicates = Counter(
            "tickpipe_messages_duplicate",
            "Re-delivered messages already stored (duplicate key)",
            ["topic"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "tickpipe_messages_dead_lettered",
            "Messages sent to the dead-letter destination",
            ["topic", "reason"],
            registry=r,
        )
        self.filtered = Counter(
            "tickpipe_messages_filtered",
            "Messages skipped by a topic filter (committed, not stored)",
            ["topic"],
            registry=r,
        )
        self.batch_size = Histogram(
            "tickpipe_batch_messages",
            "Messages per written batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=r,
        )
        self.write_seconds = Histogram(
            "tickpipe_batch_write_seconds",
            "Time to make a batch durable (incl. retries)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "tickpipe_commit_seconds",
            "Synchronous Kafka offset commit latency",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=r,
        )
        self.latest_updates = Counter(
            "tickpipe_latest_updates",
            "Symbols whose latest tick was updated (write_model *latest)",
            registry=r,
        )
        self.retries = Counter(
            "tickpipe_retries", "Retried operations after transient errors", ["target"], registry=r
        )
        self.rebalances = Counter("tickpipe_rebalances", "Partition assignment changes", ["kind"], registry=r)
        self.lag = Gauge(
            "tickpipe_consumer_lag",
            "High watermark minus committed offset, per partition",
            ["topic", "partition"],
            registry=r,
        )
        self.committed_offset = Gauge(
            "tickpipe_committed_offset",
            "Last committed offset per partition",
            ["topic", "partition"],
            registry=r,
        )
        self.in_flight = Gauge(
            "tickpipe_in_flight_batches", "Batches handed to the writer, not yet committed", registry=r
        )
        self.paused = Gauge(
            "tickpipe_consumption_paused", "1 while consumption is paused for backpressure", registry=r
        )
        self.assigned = Gauge("tickpipe_assigned_partitions", "Partitions currently assigned", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Health:
    """Liveness (loop not stuck) and readiness (both servers reachable, partitions assigned)."""

    stuck_after_s: float = 60.0
    heartbeat: float = field(default_factory=time.monotonic)
    kafka_ok: bool = False
    mongo_ok: bool = False
    assigned: int = 0
    started: bool = False

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self.heartbeat
        return age < self.stuck_after_s, {"loop_heartbeat_age_s": round(age, 3)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        ready = self.started and self.kafka_ok and self.mongo_ok and self.assigned > 0
        return ready, {"kafka": self.kafka_ok, "mongo": self.mongo_ok, "assigned_partitions": self.assigned}


class MetricsServer:
    """HTTP server: /metrics (Prometheus text), /healthz and /readyz (200 or 503, JSON body)."""

    def __init__(self, metrics: Metrics, health: Health, host: str, port: int) -> None:
        handler = _make_handler(metrics, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(metrics: Metrics, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif self.path in ("/healthz", "/readyz"):
                ok, body = health.liveness() if self.path == "/healthz" else health.readiness()
                body["status"] = "ok" if ok else "unavailable"
                self._send(200 if ok else 503, orjson.dumps(body), "application/json")
            else:
                self._send(404, b'{"error": "not found"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
