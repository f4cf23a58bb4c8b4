"""Kafka security end to end, on Apache Kafka: SASL/SCRAM-SHA-512 over SASL_PLAINTEXT and SASL_SSL, TLS with a
CA made here with openssl, and the StandardAuthorizer with ACLs.

One broker for the module (pipeline/dev/apache_kafka.py, `Security`): users created at format time with
`--add-scram`, `allow.everyone.if.no.acl.found=false`, and a PLAINTEXT listener whose principal (ANONYMOUS)
is a super user: the harness creates topics, grants ACLs and reads committed offsets through it. The broker
keeps Kafka's stock `group.min.session.timeout.ms` (6000), so the workers here use 6 s sessions, and a
shorter one is refused by the broker (a configuration error, exit 2).

With the right credentials and ACLs, `pipeline run`, `produce`, `status`, `topics` and `tail` work. A wrong
password, an untrusted certificate, a missing Read ACL on the topic and a missing ACL on the group each end
with one `error:` line naming that cause (not "cannot reach Kafka"), a non-zero exit within the connect
timeout and no traceback; no secret is ever printed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from pipeline.dev.apache_kafka import ApacheKafka, Security, TlsFiles, make_tls_files
from tests.conftest import register_logs
from tests.harness import (
    REPO,
    ProcessWorker,
    Scenario,
    assert_exactly_once,
    wait_for,
)

pytestmark = [pytest.mark.servers, pytest.mark.apache_kafka("SASL/SCRAM, TLS and ACLs")]

ADMIN_PASSWORD = "adm1n-S3cret-not-in-logs"
PASSWORD = "t1ck-Pa55word-not-in-logs"
KEYSTORE_PASSWORD = "keyst0re-not-in-logs"
SECRETS = (ADMIN_PASSWORD, PASSWORD, KEYSTORE_PASSWORD)
USER = "tick"
SESSION_MS = "6000"  # the broker's stock group.min.session.timeout.ms
CONNECT_TIMEOUT_S = 10


@dataclasses.dataclass
class SecureKafka:
    kafka: ApacheKafka
    tls: TlsFiles
    untrusted_ca: Path

    @property
    def admin_bootstrap(self) -> str:
        return self.kafka.bootstrap  # PLAINTEXT, ANONYMOUS = super user

    def grant(self, *acls: tuple[ResourceType, str, AclOperation], user: str = USER) -> None:
        admin = AdminClient({"bootstrap.servers": self.admin_bootstrap})
        bindings = [
            AclBinding(
                resource, name, ResourcePatternType.LITERAL, f"User:{user}", "*", op, AclPermissionType.ALLOW
            )
            for resource, name, op in acls
        ]
        for future in admin.create_acls(bindings, request_timeout=30).values():
            future.result(timeout=30)

    def env(self, protocol: str, password: str = PASSWORD, ca: Path | None = None) -> dict[str, str]:
        env = {
            "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": self.kafka.bootstrap_for(protocol),
            "PIPELINE_KAFKA__SECURITY__PROTOCOL": protocol,
            "PIPELINE_KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
            "PIPELINE_KAFKA__SECURITY__SASL_USERNAME": USER,
            "PIPELINE_KAFKA__SECURITY__SASL_PASSWORD": password,
            "PIPELINE_KAFKA__SESSION_TIMEOUT_MS": SESSION_MS,
            "PIPELINE_WORKER__STARTUP_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
        }
        if protocol == "SASL_SSL":
            env["PIPELINE_KAFKA__SECURITY__SSL_CA_LOCATION"] = str(ca or self.tls.ca_pem)
        return env


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    workdir = tmp_path_factory.mktemp("secure-kafka")
    tls = make_tls_files(workdir / "tls", KEYSTORE_PASSWORD)
    untrusted = make_tls_files(workdir / "tls-untrusted", "other-keystore", name="untrusted")
    kafka = ApacheKafka(
        workdir,
        security=Security({"admin": ADMIN_PASSWORD, USER: PASSWORD}, tls),
        extra={"group.min.session.timeout.ms": "6000"},
    )
    register_logs(*kafka.log_paths)
    kafka.start()
    try:
        yield SecureKafka(kafka, tls, untrusted.ca_pem)
    finally:
        kafka.stop()


@pytest.fixture
def scenario(make_scenario: Callable[..., Scenario], secure: SecureKafka) -> Scenario:
    """Topics and a group on the secured broker; the harness itself uses the PLAINTEXT (admin) listener."""
    base = make_scenario(("petr4",), partitions=2, create=False)
    servers = dataclasses.replace(base.servers, bootstrap=secure.admin_bootstrap)
    sc = dataclasses.replace(base, servers=servers, ends={})
    sc.create_topics()
    sc.create_topics([f"{sc.topics[0]}.dlq"], partitions=1)
    return sc


def worker_acls(sc: Scenario, *, read: bool = True, group: bool = True) -> list[Any]:
    topic = sc.topics[0]
    acls = [
        (ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
        (ResourceType.TOPIC, f"{topic}.dlq", AclOperation.WRITE),
        (ResourceType.TOPIC, f"{topic}.dlq", AclOperation.DESCRIBE),
    ]
    if read:
        acls.append((ResourceType.TOPIC, topic, AclOperation.READ))
    if group:
        acls.append((ResourceType.GROUP, sc.group, AclOperation.READ))
    return acls


def _cli(args: list[str], env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, "a secret was printed"


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_every_command_works_with_the_right_credentials_and_acls(
    protocol: str, scenario: Scenario, secure: SecureKafka, tmp_path: Path
) -> None:
    sc = scenario
    topic = sc.topics[0]
    extra_topic = f"{topic}-made-by-tick"
    secure.grant(
        *worker_acls(sc),
        (ResourceType.TOPIC, topic, AclOperation.WRITE),  # pipeline produce
        (ResourceType.TOPIC, extra_topic, AclOperation.CREATE),  # pipeline topics create
        (ResourceType.TOPIC, extra_topic, AclOperation.DESCRIBE),
    )
    env = {**sc.env(), **secure.env(protocol), "PIPELINE_LOG__LEVEL": "DEBUG"}
    outputs: list[str] = []

    created = _cli(["topics", "create", extra_topic, "--partitions", "2"], env)
    outputs += [created.stdout, created.stderr]
    assert created.returncode == 0, created.stderr[-2000:]
    listed = _cli(["topics", "list"], env)
    outputs += [listed.stdout, listed.stderr]
    assert listed.returncode == 0 and topic in listed.stdout and extra_topic in listed.stdout, listed

    produced = _cli(["produce", "--topics", topic, "--count", "600", "--spread"], env)
    outputs += [produced.stdout, produced.stderr]
    assert produced.returncode == 0 and "produced 600/600" in produced.stdout, produced.stderr[-2000:]
    sc.ends = _end_offsets(secure.admin_bootstrap, topic, 2)
    assert sum(sc.ends.values()) == 600

    worker = ProcessWorker(env, tmp_path / "worker.log").start()
    try:
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=120, interval=0.5, what="all committed"
        )
        worker.terminate(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.stop()
    outputs.append(worker.log_text())
    assert "Traceback" not in worker.log_text()
    assert_exactly_once(sc)

    status = _cli(["status", "--format", "json"], env)
    outputs += [status.stdout, status.stderr]
    assert status.returncode == 0, status.stderr[-2000:]
    assert f'"{topic}"' in status.stdout and "600" in status.stdout, status.stdout

    tail = _cli(["tail", topic, "--from-beginning", "--max", "10", "--format", "json"], env)
    outputs += [tail.stdout, tail.stderr]
    assert tail.returncode == 0, tail.stderr[-2000:]
    rows = [json.loads(line) for line in tail.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 10 and all(r["topic"] == topic for r in rows)

    shown = _cli(["config", "show"], env)
    outputs += [shown.stdout, shown.stderr]
    _assert_no_secret(*outputs)


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends", "enable.auto.commit": False})
    try:
        return {
            (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


# ---- refusals: one line naming the cause -----------------------------------------------------------------

# (case, protocol, how the environment differs, what the error line must name)
REFUSALS = {
    "wrong-password": ("SASL_SSL", {"password": "wrong-" + PASSWORD}, ("credentials",)),
    "untrusted-certificate": ("SASL_SSL", {"untrusted": True}, ("TLS",)),
    "no-read-acl-on-topic": ("SASL_PLAINTEXT", {"read": False}, ("TOPIC_AUTHORIZATION_FAILED",)),
    "no-acl-on-group": ("SASL_PLAINTEXT", {"group": False}, ("GROUP_AUTHORIZATION_FAILED",)),
}
# The commands each refusal is checked with (the group ACL only matters to those that use the group).
COMMANDS = {
    "run": ["run"],
    "produce": ["produce", "--count", "5"],
    "status": ["status"],
    "topics": ["topics", "list"],
    "tail": ["tail", "--max", "1"],
}
CASES = [
    ("wrong-password", "run"),
    ("wrong-password", "produce"),
    ("wrong-password", "status"),
    ("wrong-password", "topics"),
    ("wrong-password", "tail"),
    ("untrusted-certificate", "run"),
    ("untrusted-certificate", "produce"),
    ("untrusted-certificate", "status"),
    ("untrusted-certificate", "topics"),
    ("untrusted-certificate", "tail"),
    ("no-read-acl-on-topic", "run"),
    ("no-read-acl-on-topic", "tail"),
    ("no-acl-on-group", "run"),
    ("no-acl-on-group", "status"),
    ("no-acl-on-group", "tail-group"),
]


@pytest.mark.parametrize("case, command", CASES, ids=[f"{c}-{m}" for c, m in CASES])
def test_a_refusal_ends_with_one_line_naming_its_cause(
    case: str, command: str, scenario: Scenario, secure: SecureKafka
) -> None:
    sc = scenario
    protocol, change, named = REFUSALS[case]
    topic = sc.topics[0]
    secure.grant(
        *worker_acls(sc, read=bool(change.get("read", True)), group=bool(change.get("group", True))),
        (ResourceType.TOPIC, topic, AclOperation.WRITE),
    )
    sc.produce(20)  # something to read, through the admin listener
    ca = secure.untrusted_ca if change.get("untrusted") else None
    env = {**sc.env(), **secure.env(protocol, password=str(change.get("password", PASSWORD)), ca=ca)}
    args = {
        **COMMANDS,
        "produce": ["produce", "--topics", topic, "--count", "5"],
        "tail": ["tail", topic, "--from-beginning", "--max", "1"],
        # (a group of its own: tail refuses the worker's group)
        "tail-group": ["tail", topic, "--group", f"{sc.group}-tail", "--from-beginning", "--max", "1"],
    }[command]
    started = time.monotonic()
    try:
        result = _cli(args, env, timeout=CONNECT_TIMEOUT_S + 30)
    except subprocess.TimeoutExpired as exc:
        output = (exc.stderr or b"")[-2000:]
        raise AssertionError(
            f"`pipeline {' '.join(args)}` hangs (no exit in {exc.timeout:g}s): {output!r}"
        ) from None
    elapsed = time.monotonic() - started
    assert result.returncode != 0, result.stdout[-2000:] + result.stderr[-2000:]
    line = _one_error_line(result)
    assert "cannot reach Kafka" not in line, line
    assert all(word in line for word in named), line
    # Within the connect timeout (plus the interpreter's start-up and a group join for the runtime cases).
    assert elapsed < CONNECT_TIMEOUT_S + 10, f"took {elapsed:.1f}s"
    _assert_no_secret(result.stdout, result.stderr)


def test_a_worker_without_any_acl_exits_with_one_line_and_no_traceback(
    scenario: Scenario, secure: SecureKafka, tmp_path: Path
) -> None:
    """Before: the worker waited forever, and SIGTERM ended in a traceback from the dead-letter producer
    (CLUSTER_AUTHORIZATION_FAILED: 'Failed to acquire idempotence PID')."""
    sc = scenario
    env = {**sc.env(), **secure.env("SASL_PLAINTEXT")}
    started = time.monotonic()
    result = _cli(["run"], env, timeout=120)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 10
    assert result.returncode != 0
    line = _one_error_line(result)
    assert "AUTHORIZATION_FAILED" in line, line
    _assert_no_secret(result.stdout, result.stderr)


def test_a_worker_without_acls_on_its_dead_letter_topic_stops_without_a_traceback(
    scenario: Scenario, secure: SecureKafka, tmp_path: Path
) -> None:
    """Read ACLs on the topic and the group, none on the dead-letter topic (so the idempotent dead-letter
    producer cannot get a producer id: CLUSTER_AUTHORIZATION_FAILED). Before: SIGTERM ended in a traceback
    from that producer's flush. Now: either the worker refuses to start, with one line naming the missing
    authorization, or SIGTERM stops it cleanly; never a traceback."""
    sc = scenario
    topic = sc.topics[0]
    secure.grant(
        (ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
        (ResourceType.TOPIC, topic, AclOperation.READ),
        (ResourceType.GROUP, sc.group, AclOperation.READ),
    )
    sc.produce(50)
    worker = ProcessWorker({**sc.env(), **secure.env("SASL_PLAINTEXT")}, tmp_path / "worker.log").start()
    try:
        deadline = time.monotonic() + 8
        while worker.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if worker.alive():
            worker.terminate(signal.SIGTERM)
        code = worker.wait(30)
    finally:
        worker.stop()
    log = worker.log_text()
    assert "Traceback" not in log, log[-3000:]
    if code != 0:
        errors = [line for line in log.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "AUTHORIZATION_FAILED" in errors[0], log[-3000:]
    _assert_no_secret(log)


def test_a_session_timeout_below_the_brokers_minimum_is_a_configuration_error(
    scenario: Scenario, secure: SecureKafka
) -> None:
    """Before: 'JoinGroup failed: Broker: Invalid session timeout' every 2 s, forever, nothing stored."""
    sc = scenario
    secure.grant(*worker_acls(sc))
    sc.produce(20)
    env = {**sc.env(), **secure.env("SASL_PLAINTEXT"), "PIPELINE_KAFKA__SESSION_TIMEOUT_MS": "3000"}
    started = time.monotonic()
    result = _cli(["run"], env, timeout=120)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 10
    assert result.returncode == 2, result.stderr[-3000:]
    line = _one_error_line(result)
    assert "kafka.session_timeout_ms" in line and "INVALID_SESSION_TIMEOUT" in line, line
