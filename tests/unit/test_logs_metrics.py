"""Unit tests for pipeline.ops.logs (JSON/text formatters) and pipeline.ops.metrics (HTTP endpoints)."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest

from pipeline.ops.logs import JsonFormatter, TextFormatter, get_logger, setup_logging
from pipeline.ops.metrics import Health, Metrics, MetricsServer

# --- logs ---------------------------------------------------------------------------------------------------


@pytest.fixture
def capture() -> Iterator[tuple[str, io.StringIO, logging.Handler]]:
    """A private logger (not propagating to root) writing into a StringIO."""
    name = f"tickpipe.test.{uuid.uuid4().hex[:8]}"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield name, stream, handler
    finally:
        logger.removeHandler(handler)


def test_json_formatter_emits_one_object_per_line(capture: tuple[str, io.StringIO, logging.Handler]) -> None:
    name, stream, handler = capture
    handler.setFormatter(JsonFormatter())
    log = get_logger(name)
    log.info("batch stored", docs=1000, ms=12.5, topic="petr4")
    log.warning("paused", reason="backlog\nfull")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "batch stored"
    assert first["level"] == "info"
    assert first["logger"] == name
    assert (first["docs"], first["ms"], first["topic"]) == (1000, 12.5, "petr4")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["level"] == "warning"
    assert second["reason"] == "backlog\nfull"


def test_json_formatter_serialises_unknown_types_as_strings(
    capture: tuple[str, io.StringIO, logging.Handler],
) -> None:
    name, stream, handler = capture
    handler.setFormatter(JsonFormatter())

    class Opaque:
        def __str__(self) -> str:
            return "opaque-value"

    get_logger(name).error("odd", obj=Opaque(), when=datetime(2024, 1, 2, 3, 4, 5), parts=[("petr4", 0)])
    entry = json.loads(stream.getvalue())
    assert entry["obj"] == "opaque-value"
    assert entry["when"].startswith("2024-01-02T03:04:05")
    assert entry["parts"] == [["petr4", 0]]
    assert entry["level"] == "error"


def test_json_formatter_includes_exception_for_errors() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, exc_info=sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: boom" in entry["exc"]
    assert entry["msg"] == "failed"


def test_json_formatter_plain_logging_record_without_fields() -> None:
    record = logging.LogRecord("plain", logging.INFO, __file__, 1, "value %d", (7,), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "value 7"
    assert set(entry) == {"ts", "level", "logger", "msg"}


def test_text_formatter_key_value(capture: tuple[str, io.StringIO, logging.Handler]) -> None:
    name, stream, handler = capture
    handler.setFormatter(TextFormatter())
    get_logger(name).info("batch stored", docs=1000, ms=12.5, topic="petr4", note="two words")
    line = stream.getvalue().rstrip("\n")
    assert "\n" not in line
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} INFO    " + re.escape(name) + ": batch stored  ", line)
    assert line.endswith('docs=1000 ms=12.5 topic=petr4 note="two words"')


def test_text_formatter_without_fields_has_no_trailing_separator() -> None:
    record = logging.LogRecord("plain", logging.WARNING, __file__, 1, "hello", None, None)
    line = TextFormatter().format(record)
    assert line.endswith("WARNING plain: hello")


def test_text_formatter_float_formatting() -> None:
    record = logging.LogRecord("n", logging.INFO, __file__, 1, "m", None, None)
    record._fields = {"small": 0.123456, "big": 12345678.9}
    assert TextFormatter().format(record).endswith("small=0.123 big=12345679")


def test_structured_logger_respects_level(capture: tuple[str, io.StringIO, logging.Handler]) -> None:
    name, stream, handler = capture
    handler.setFormatter(JsonFormatter())
    logging.getLogger(name).setLevel(logging.INFO)
    log = get_logger(name)
    assert not log.is_debug()
    log.debug("hidden", x=1)
    log.info("shown")
    assert [json.loads(line)["msg"] for line in stream.getvalue().splitlines()] == ["shown"]
    logging.getLogger(name).setLevel(logging.DEBUG)
    assert log.is_debug()


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {
        name: logging.getLogger(name).level for name in ("pymongo", "kafka", "urllib3", "matplotlib", "PIL")
    }
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, lvl in noisy.items():
            logging.getLogger(name).setLevel(lvl)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.usefixtures("restore_root_logging")
def test_setup_logging_auto_uses_json_when_not_a_terminal() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "auto", stream=stream)
    get_logger("tickpipe.setup").info("hello", n=1)
    get_logger("tickpipe.setup").debug("hidden")
    entry = json.loads(stream.getvalue())
    assert (entry["msg"], entry["n"]) == ("hello", 1)
    assert logging.getLogger("pymongo").level == logging.WARNING


@pytest.mark.usefixtures("restore_root_logging")
def test_setup_logging_auto_uses_text_on_a_terminal() -> None:
    stream = _Tty()
    setup_logging("DEBUG", "auto", stream=stream)
    get_logger("tickpipe.setup").debug("hello", n=1)
    assert stream.getvalue().rstrip().endswith("DEBUG   tickpipe.setup: hello  n=1")
    # third-party loggers stay at warning even in debug mode
    assert logging.getLogger("kafka").level == logging.WARNING


@pytest.mark.usefixtures("restore_root_logging")
def test_setup_logging_explicit_format_wins_and_replaces_handlers() -> None:
    first, second = _Tty(), _Tty()
    setup_logging("INFO", "json", stream=first)
    setup_logging("ERROR", "json", stream=second)
    get_logger("tickpipe.setup").error("only once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["msg"] == "only once"
    assert logging.getLogger("urllib3").level == logging.ERROR


# --- metrics ------------------------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with _OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Metrics, Health, MetricsServer]]:
    # One server per module: stopping one waits for serve_forever's 0.5 s poll interval.
    metrics, health = Metrics(), Health()
    server = MetricsServer(metrics, health, "127.0.0.1", 0)
    server.start()
    try:
        yield metrics, health, server
    finally:
        server.stop()


@pytest.fixture
def served(server: tuple[Metrics, Health, MetricsServer]) -> tuple[Metrics, Health, MetricsServer]:
    """The shared server with its Health reset to a fresh, not-ready state."""
    health = server[1]
    fresh = Health()
    for attr in ("stuck_after_s", "heartbeat", "kafka_ok", "mongo_ok", "assigned", "started"):
        setattr(health, attr, getattr(fresh, attr))
    return server


def test_server_binds_an_ephemeral_port(served: tuple[Metrics, Health, MetricsServer]) -> None:
    assert served[2].port > 0


def test_metrics_endpoint_serves_prometheus_text(served: tuple[Metrics, Health, MetricsServer]) -> None:
    metrics, _, server = served
    metrics.consumed.labels("petr4").inc(3)
    metrics.stored.labels("petr4").inc(2)
    metrics.dead_lettered.labels("petr4", "invalid_json").inc()
    metrics.lag.labels("petr4", "0").set(42)
    metrics.batch_size.observe(100)
    status, content_type, body = get(server.port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert 'tickpipe_messages_consumed_total{topic="petr4"} 3.0' in body
    assert 'tickpipe_messages_stored_total{topic="petr4"} 2.0' in body
    assert 'tickpipe_messages_dead_lettered_total{reason="invalid_json",topic="petr4"} 1.0' in body
    assert 'tickpipe_consumer_lag{partition="0",topic="petr4"} 42.0' in body
    assert "tickpipe_batch_messages_count 1.0" in body
    for name in (
        "tickpipe_messages_duplicate",
        "tickpipe_messages_filtered",
        "tickpipe_batch_write_seconds",
        "tickpipe_commit_seconds",
        "tickpipe_retries",
        "tickpipe_rebalances",
        "tickpipe_committed_offset",
        "tickpipe_in_flight_batches",
        "tickpipe_consumption_paused",
        "tickpipe_assigned_partitions",
    ):
        assert re.search(rf"^# TYPE {name}(_total)? ", body, re.MULTILINE), name
    assert "python_gc" not in body  # own registry, no process-wide default collectors


def test_each_metrics_instance_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.consumed.labels("t").inc()
    assert b'tickpipe_messages_consumed_total{topic="t"} 1.0' in a.render()
    assert b'topic="t"' not in b.render()


def test_healthz_200_when_heartbeat_is_fresh(served: tuple[Metrics, Health, MetricsServer]) -> None:
    _, health, server = served
    health.beat()
    status, content_type, body = get(server.port, "/healthz")
    assert status == 200
    assert content_type == "application/json"
    data = json.loads(body)
    assert data["status"] == "ok"
    assert 0 <= data["loop_heartbeat_age_s"] < 5


def test_healthz_503_when_heartbeat_is_stale(served: tuple[Metrics, Health, MetricsServer]) -> None:
    _, health, server = served
    health.stuck_after_s = 0.5
    health.heartbeat = time.monotonic() - 10
    status, _, body = get(server.port, "/healthz")
    assert status == 503
    data = json.loads(body)
    assert data["status"] == "unavailable"
    assert data["loop_heartbeat_age_s"] >= 10
    health.beat()
    assert get(server.port, "/healthz")[0] == 200


def test_readyz_503_until_started_connected_and_assigned(
    served: tuple[Metrics, Health, MetricsServer],
) -> None:
    _, health, server = served
    status, _, body = get(server.port, "/readyz")
    assert status == 503
    assert json.loads(body) == {
        "kafka": False,
        "mongo": False,
        "assigned_partitions": 0,
        "status": "unavailable",
    }
    steps = [("started", True), ("kafka_ok", True), ("mongo_ok", True)]
    for attr, value in steps:
        setattr(health, attr, value)
        assert get(server.port, "/readyz")[0] == 503, attr
    health.assigned = 3
    status, _, body = get(server.port, "/readyz")
    assert status == 200
    assert json.loads(body) == {"kafka": True, "mongo": True, "assigned_partitions": 3, "status": "ok"}
    health.mongo_ok = False
    assert get(server.port, "/readyz")[0] == 503


def test_readyz_requires_started(served: tuple[Metrics, Health, MetricsServer]) -> None:
    _, health, server = served
    health.kafka_ok = health.mongo_ok = True
    health.assigned = 1
    assert get(server.port, "/readyz")[0] == 503
    health.started = True
    assert get(server.port, "/readyz")[0] == 200


@pytest.mark.parametrize("path", ["/", "/metric", "/healthz/", "/readyz/x", "/favicon.ico"])
def test_other_paths_are_404(served: tuple[Metrics, Health, MetricsServer], path: str) -> None:
    status, content_type, body = get(served[2].port, path)
    assert status == 404
    assert content_type == "application/json"
    assert json.loads(body) == {"error": "not found"}


def test_health_objects_without_server() -> None:
    health = Health(stuck_after_s=60)
    ok, detail = health.liveness()
    assert ok and detail["loop_heartbeat_age_s"] < 1
    ready, detail = health.readiness()
    assert not ready
    assert detail == {"kafka": False, "mongo": False, "assigned_partitions": 0}


def test_repeated_client_errors_are_rate_limited_but_distinct_ones_are_not() -> None:
    import io

    from pipeline.ops.logs import RepeatFilter, get_logger, setup_logging

    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    flaky = get_logger("pipeline.clients.source")
    for attempt in range(50):
        flaky.warning("Kafka client error", error=f"Connect failed (after {attempt}ms in state CONNECT)")
    writer = get_logger("pipeline.ingest.writer")
    for offset in range(5):
        writer.warning("message dead-lettered", topic="petr4", offset=offset)
    get_logger("pipeline.ingest.worker").warning("not rate limited")
    get_logger("pipeline.ingest.worker").warning("not rate limited")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert sum(1 for line in lines if line["msg"] == "Kafka client error") == 1
    assert [line["offset"] for line in lines if line["msg"] == "message dead-lettered"] == [0, 1, 2, 3, 4]
    assert sum(1 for line in lines if line["msg"] == "not rate limited") == 2

    # After the window, the next occurrence gets through and says how many were held back.
    limiter = RepeatFilter(prefixes=("kafka",), window_s=0.0)
    record = logging.LogRecord("kafka", logging.ERROR, __file__, 1, "FAIL broker down", None, None)
    assert limiter.filter(record) and limiter.filter(record)
