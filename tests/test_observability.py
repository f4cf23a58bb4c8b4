"""Observability against the real test servers: /metrics, /healthz and /readyz of a running worker, the
image's health checks, and credentials that never leak into metrics, logs or command output."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from pipeline.ops.logs import JsonFormatter
from tests import deployment_rules as rules
from tests.harness import REPO, Scenario, Servers, thread_worker, unique, wait_for

pytestmark = pytest.mark.servers

Samples = dict[str, list[tuple[dict[str, str], float]]]


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    for sample_labels, sample_value in samples.get(name, []):
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return sample_value
    return None


def with_credentials(uri: str, user: str, password: str) -> str:
    return uri.replace("mongodb://", f"mongodb://{user}:{password}@", 1).replace("?", "?authSource=admin&", 1)


@pytest.fixture
def mongo_user(servers: Servers) -> Iterator[tuple[str, str]]:
    """A real user on the test server. The server runs without --auth, but it does authenticate clients that
    present credentials (a wrong password is refused), so the worker really logs in with these."""
    user, password = unique("obs"), f"S3cret-{uuid.uuid4().hex}"
    with MongoClient(servers.mongo_uri, serverSelectionTimeoutMS=20_000) as client:
        client.admin.command("createUser", user, pwd=password, roles=[{"role": "root", "db": "admin"}])
    try:
        yield user, password
    finally:
        with MongoClient(servers.mongo_uri, serverSelectionTimeoutMS=20_000) as client:
            client.admin.command("dropUser", user)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record of the test process as the worker would write it (JSON lines), the pipeline's own
    loggers at DEBUG; third-party loggers at WARNING, as `setup_logging` configures them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in ("", "pymongo", "kafka")}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("pymongo").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def cli(args: list[str], env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIPELINE_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dockerfile_healthcheck() -> list[str]:
    """The image's HEALTHCHECK command, with `python` being this interpreter."""
    stages = rules.parse_dockerfile((REPO / "Dockerfile").read_text())
    health = stages[-1].last("HEALTHCHECK")
    assert health is not None
    command = json.loads(health.args.split(" CMD ", 1)[1])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def run_check(command: list[str], env: dict[str, str]) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIPELINE_")}
    return subprocess.run(command, env={**clean, **env}, capture_output=True, timeout=30).returncode


def test_metrics_and_health_endpoints_while_the_worker_ingests_and_no_secret_leaks(
    make_scenario: Callable[..., Scenario],
    mongo_user: tuple[str, str],
    captured_logs: io.StringIO,
) -> None:
    user, password = mongo_user
    sc = make_scenario(("petr4", "vale3"), partitions=3)
    reports = [sc.produce(1_500, seed=1)]
    uri = with_credentials(sc.servers.mongo_uri, user, password)
    settings = sc.settings(
        mongo={"uri": uri},
        metrics={"enabled": True, "host": "127.0.0.1", "port": 0},
        # The lag gauge is refreshed with the progress summary.
        log={"summary_interval_s": 0.3},
        batch={"max_messages": 250},
    )
    bodies: list[bytes] = []
    readiness: list[tuple[int, dict[str, Any]]] = []
    with thread_worker(settings) as runner:
        worker = runner.worker
        wait_for(lambda: worker.metrics_server is not None, timeout=60, what="metrics server started")
        assert worker.metrics_server is not None
        port = worker.metrics_server.port
        assert port > 0

        def ready() -> bool:
            status, body = http_get(port, "/readyz")
            readiness.append((status, json.loads(body)))
            return status == 200

        wait_for(ready, timeout=90, interval=0.05, what="/readyz 200")
        status, body = readiness[-1]
        assert body == {"kafka": True, "mongo": True, "assigned_partitions": 6, "status": "ok"}
        for status, body in readiness[:-1]:  # before the assignment, if we were early enough to see it
            assert status == 503 and body["status"] == "unavailable" and body["assigned_partitions"] == 0

        status, raw = http_get(port, "/healthz")
        health = json.loads(raw)
        assert status == 200 and health["status"] == "ok" and 0 <= health["loop_heartbeat_age_s"] < 60
        assert run_check(dockerfile_healthcheck(), {"PIPELINE_METRICS__PORT": str(port)}) == 0
        assert http_get(port, "/nope")[0] == 404

        # More ticks while it runs; scrape during the ingestion.
        reports.append(sc.produce(3_000, seed=2))
        total = sum(r.delivered for r in reports)
        partial: list[float] = []
        deadline = time.monotonic() + 180
        while sc.committed(list(sc.ends)) != sc.ends:
            assert time.monotonic() < deadline, "not everything committed in time"
            status, body = http_get(port, "/metrics")
            assert status == 200
            bodies.append(body)
            stored = sum(v for _, v in parse_metrics(body.decode()).get("tickpipe_messages_stored_total", []))
            if 0 < stored < total:
                partial.append(stored)
            time.sleep(0.05)
        assert partial, "no scrape happened while the worker was still ingesting"
        assert http_get(port, "/healthz")[0] == 200

        def lag_for_every_partition() -> bool:
            body = http_get(port, "/metrics")[1]
            bodies.append(body)
            return len(parse_metrics(body.decode()).get("tickpipe_consumer_lag", [])) == 6

        wait_for(lag_for_every_partition, timeout=30, interval=0.2, what="lag gauge of every partition")
        final = parse_metrics(bodies[-1].decode())
        assert runner.stop() == 0
    assert run_check(dockerfile_healthcheck(), {"PIPELINE_METRICS__PORT": str(port)}) != 0

    # Counters match what was produced and stored (a fresh group: no duplicates, nothing dead-lettered).
    per_topic = {topic: 0 for topic in sc.topics}
    for report in reports:
        for (topic, _partition), offsets in report.offsets.items():
            per_topic[topic] += len(offsets)
    assert sum(per_topic.values()) == total == 4_500
    with sc.mongo() as client:
        in_mongo = {t: client[sc.database][t].count_documents({}) for t in sc.topics}
    assert in_mongo == per_topic
    for topic, count in per_topic.items():
        assert value(final, "tickpipe_messages_consumed_total", topic=topic) == count
        assert value(final, "tickpipe_messages_stored_total", topic=topic) == count
        assert value(final, "tickpipe_messages_duplicate_total", topic=topic) in (None, 0)
    assert not final.get("tickpipe_messages_dead_lettered_total")

    # Histograms: batch sizes add up to every message; each batch has a write latency; commits are timed.
    batches = value(final, "tickpipe_batch_messages_count")
    assert batches is not None and batches >= total / 250
    assert value(final, "tickpipe_batch_messages_sum") == total
    assert value(final, "tickpipe_batch_write_seconds_count") == batches
    write_seconds = value(final, "tickpipe_batch_write_seconds_sum")
    assert write_seconds is not None and write_seconds > 0
    assert value(final, "tickpipe_batch_write_seconds_bucket", le="+Inf") == batches
    commits = value(final, "tickpipe_commit_seconds_count")
    assert commits is not None and commits >= 1
    assert value(final, "tickpipe_commit_seconds_bucket", le="+Inf") == commits

    # Group membership and offsets.
    assigns = value(final, "tickpipe_rebalances_total", kind="assign")
    assert assigns is not None and assigns >= 1
    assert value(final, "tickpipe_assigned_partitions") == 6
    for (topic, partition), end in sc.ends.items():
        assert value(final, "tickpipe_committed_offset", topic=topic, partition=str(partition)) == end
        lag = value(final, "tickpipe_consumer_lag", topic=topic, partition=str(partition))
        # Only a lower bound: the test broker reports a wrong high watermark (see /work/shared/TESTING.md).
        assert lag is not None and lag >= 0

    # The password is nowhere: not in any scrape (label values included), health body or log line.
    for body in bodies:
        assert password.encode() not in body
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                assert all(password not in label for label in sample.labels.values())
    assert all(password not in json.dumps(body) for _, body in readiness)
    logs = captured_logs.getvalue()
    assert '"msg":"worker started"' in logs and f"mongodb://{user}:***@" in logs, logs[-2000:]
    assert password not in logs


def test_commands_never_print_the_password(servers: Servers, mongo_user: tuple[str, str]) -> None:
    user, password = mongo_user
    env = {
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": servers.bootstrap,
        "PIPELINE_MONGO__URI": with_credentials(servers.mongo_uri, user, password),
        "PIPELINE_KAFKA__SECURITY__SASL_PASSWORD": password,
    }
    shown = cli(["config", "show"], env)
    assert shown.returncode == 0, shown.stderr
    assert password not in shown.stdout + shown.stderr
    effective = yaml.safe_load(shown.stdout)
    assert effective["mongo"]["uri"].startswith(f"mongodb://{user}:***@")
    assert effective["kafka"]["security"]["sasl_password"] == "**********"
    for args in (["--help"], ["status", "--help"], ["config", "reference"], ["config", "check"]):
        result = cli(args, env)
        assert result.returncode == 0, (args, result.stderr)
        assert password not in result.stdout + result.stderr, args
    # A wrong password: refused in one line, without echoing it.
    wrong = {**env, "PIPELINE_MONGO__URI": with_credentials(servers.mongo_uri, user, "x" + password)}
    del wrong["PIPELINE_KAFKA__SECURITY__SASL_PASSWORD"]
    result = cli(["status", "--timeout", "10"], wrong)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "refused us" in result.stderr, result.stderr
    assert password not in result.stderr


def test_the_producer_health_check_of_docker_compose_probes_the_broker(
    servers: Servers, tmp_path: Path
) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    test = compose["services"]["producer"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    command = [sys.executable, *test[2:]]
    assert run_check(command, {"PIPELINE_KAFKA__BOOTSTRAP_SERVERS": servers.bootstrap}) == 0
    from pipeline.dev.process import free_port

    assert run_check(command, {"PIPELINE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}) != 0
