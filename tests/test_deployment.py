"""docker-compose.yml, .env.example, the Dockerfile and .dockerignore, checked statically (no Docker engine).

The rules live in tests/deployment_rules.py; every rule is also run on small bad examples below, so a rule
that silently accepts everything would fail its own test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.ops.config import ConfigError, Settings, load_settings
from tests import deployment_rules as rules
from tests.harness import REPO

COMPOSE_PATH = REPO / "docker-compose.yml"
ENV_EXAMPLE_PATH = REPO / ".env.example"
DOCKERFILE_PATH = REPO / "Dockerfile"
DOCKERIGNORE_PATH = REPO / ".dockerignore"

SERVICES = {"kafka", "topic-init", "mongo", "worker", "producer", "web"}
TOPICS = ["petr4", "vale3"]
METRICS_PORT = 9108
WEB_PORT = 8080
PRODUCER_COMMAND = ["produce", "--topics", "petr4,vale3", "--count", "0", "--rate", "20"]


def _env_variants() -> dict[str, dict[str, str]]:
    """The environments compose may interpolate with: no .env at all, .env = .env.example, and .env.example
    with its commented examples (MongoDB authentication) turned on."""
    active, commented = rules.parse_env_file(ENV_EXAMPLE_PATH.read_text())
    return {"no-env-file": {}, "env-example": active, "env-example-with-auth": {**active, **commented}}


VARIANTS = _env_variants()


def compose_for(variant: str) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_PATH.read_text())
    return rules.interpolate_tree(raw, VARIANTS[variant])


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_for("env-example")


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stages() -> list[rules.Stage]:
    return rules.parse_dockerfile(DOCKERFILE_PATH.read_text())


def _built_here(service: dict[str, Any]) -> bool:
    build = service.get("build")
    context = build.get("context") if isinstance(build, dict) else build
    return context in (".", "./")


def inherited_healthchecks(services: dict[str, Any], stages: list[rules.Stage]) -> dict[str, bool]:
    """Services built from our Dockerfile and running its default command inherit its HEALTHCHECK (the
    worker's /healthz); any other command (produce) must bring its own."""
    image_check = bool(stages) and stages[-1].last("HEALTHCHECK") is not None
    return {
        name: image_check and _built_here(s) and s.get("command") in (None, ["run"])
        for name, s in services.items()
    }


# ---- the real files -------------------------------------------------------------------------------------


def test_every_service_is_present(services: dict[str, Any]) -> None:
    assert set(services) == SERVICES


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_image_is_pinned_to_a_patch_version(variant: str) -> None:
    services = compose_for(variant)["services"]
    assert rules.image_problems(services) == []
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["topic-init"]["image"] == services["kafka"]["image"]
    assert services["mongo"]["image"].startswith("mongo:8.")
    for name in ("worker", "producer", "web"):
        assert _built_here(services[name]), f"{name} is not built from this repository's Dockerfile"
        assert services[name]["image"] == services["worker"]["image"]


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, Any], stages: list[rules.Stage]
) -> None:
    inherited = inherited_healthchecks(services, stages)
    assert rules.healthcheck_problems(services, inherited) == []
    assert rules.one_shot_services(services) == {"topic-init"}
    assert inherited["worker"] and not inherited["producer"] and not inherited["web"]
    assert "healthcheck" in services["producer"], "the producer must not inherit the worker's /healthz check"
    assert "healthcheck" in services["web"], "the web service must not inherit the worker's /healthz check"


def test_start_order_waits_for_health_and_for_the_topics(
    services: dict[str, Any], stages: list[rules.Stage]
) -> None:
    assert rules.depends_on_problems(services, inherited_healthchecks(services, stages)) == []

    def conditions(name: str) -> dict[str, str]:
        return {target: spec["condition"] for target, spec in services[name]["depends_on"].items()}

    assert conditions("topic-init") == {"kafka": "service_healthy"}
    assert conditions("worker") == {
        "kafka": "service_healthy",
        "mongo": "service_healthy",
        "topic-init": "service_completed_successfully",
    }
    assert conditions("producer") == {
        "kafka": "service_healthy",
        "topic-init": "service_completed_successfully",
    }
    assert conditions("web") == {"mongo": "service_healthy"}  # serves stored ticks without Kafka


def test_data_lives_in_declared_named_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert rules.volume_problems(compose) == []
    kafka_mounts = rules.mounts_of(services["kafka"])
    log_dirs = rules.service_env(services["kafka"])["KAFKA_LOG_DIRS"]
    assert log_dirs in kafka_mounts, "Kafka's log.dirs is not on a named volume"
    assert "/data/db" in rules.mounts_of(services["mongo"])
    assert not services["worker"].get("volumes"), "the worker is configured by environment only"


def test_worker_scales_and_serves_metrics_inside_the_network(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert rules.scalable_problems("worker", worker) == []
    assert rules.published_port_problems(services) == []
    env = rules.service_env(worker)
    assert env["PIPELINE_METRICS__ENABLED"] == "true"
    assert env["PIPELINE_METRICS__HOST"] == "0.0.0.0"
    assert env["PIPELINE_METRICS__PORT"] == str(METRICS_PORT)
    assert [str(p) for p in worker["expose"]] == [str(METRICS_PORT)]
    assert worker["command"] == ["run"]
    assert "PIPELINE_CONFIG" not in env, "configuration comes from environment variables only"


def test_producer_runs_the_ticker_until_stopped(services: dict[str, Any]) -> None:
    assert services["producer"]["command"] == PRODUCER_COMMAND


def test_every_pipeline_variable_is_a_config_key() -> None:
    text = COMPOSE_PATH.read_text() + "\n" + ENV_EXAMPLE_PATH.read_text()
    variables = rules.pipeline_variables(text)
    assert {"PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "PIPELINE_MONGO__URI", "PIPELINE_METRICS__HOST"} <= variables
    assert rules.config_key_problems(variables, Settings) == []


def settings_problems(env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch, cwd: Path) -> list[str]:
    """Load the settings exactly as the container would: only these PIPELINE_* variables, no config file."""
    for name in list(os.environ):
        if name.upper().startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    try:
        load_settings(None)
    except ConfigError as exc:
        return exc.lines
    return []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("service", ["worker", "producer", "web"])
def test_container_environment_validates_through_the_config_loader(
    variant: str, service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = rules.service_env(compose_for(variant)["services"][service])
    assert settings_problems(env, monkeypatch, tmp_path) == []
    settings = load_settings(None)
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.kafka.topics == TOPICS
    if service == "worker":
        uri = settings.mongo.uri.get_secret_value()
        assert uri.startswith("mongodb://mongo:27017/") and "replicaSet=rs0" in uri and "w=majority" in uri
        assert (settings.mongo.write_concern.w, settings.mongo.write_concern.j) == ("majority", True)
        assert (settings.metrics.enabled, settings.metrics.host, settings.metrics.port) == (
            True,
            "0.0.0.0",
            METRICS_PORT,
        )
        assert settings.log.format == "json"
        mongo_env = rules.service_env(compose_for(variant)["services"]["mongo"])
        if variant == "env-example-with-auth":
            assert settings.mongo.username and settings.mongo.password is not None
            assert mongo_env["MONGO_INITDB_ROOT_USERNAME"] == settings.mongo.username
            assert mongo_env["MONGO_INITDB_ROOT_PASSWORD"] == settings.mongo.password.get_secret_value()
        else:
            assert not settings.mongo.username and not mongo_env["MONGO_INITDB_ROOT_USERNAME"]
    if service == "web":
        worker = load_settings_of(compose_for(variant)["services"]["worker"], monkeypatch, tmp_path)
        settings = load_settings_of(compose_for(variant)["services"]["web"], monkeypatch, tmp_path)
        # The same database, group and credentials as the worker: it reads what the worker writes.
        uri = settings.mongo.uri.get_secret_value()
        assert uri.startswith("mongodb://mongo:27017/") and "replicaSet=rs0" in uri
        for key in ("database", "username", "password", "auth_source"):
            assert getattr(settings.mongo, key) == getattr(worker.mongo, key), key
        assert settings.kafka.group_id == worker.kafka.group_id
        assert (settings.http.host, settings.http.port, settings.http.token) == ("0.0.0.0", WEB_PORT, None)


def load_settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch, cwd: Path) -> Settings:
    assert settings_problems(rules.service_env(service), monkeypatch, cwd) == []
    return load_settings(None)


def test_the_web_service_serves_the_read_api_from_its_own_port(services: dict[str, Any]) -> None:
    web = services["web"]
    assert rules.web_problems(web) == []
    assert web["ports"] == [f"127.0.0.1:{WEB_PORT}:{WEB_PORT}"]  # the host side on loopback only
    assert rules.published_port_problems({"web": web}) == []


def test_a_token_for_the_web_service_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = yaml.safe_load(COMPOSE_PATH.read_text())["services"]["web"]
    assert rules.service_env(raw)["PIPELINE_HTTP__TOKEN"] == "${TICKPIPE_HTTP_TOKEN:-}"
    with_token = rules.interpolate_tree(raw, {"TICKPIPE_HTTP_TOKEN": "s3cr3t-token"})
    env = rules.service_env(with_token)
    assert env["PIPELINE_HTTP__TOKEN"] == "s3cr3t-token"


def test_the_image_has_what_the_web_service_needs(stages: list[rules.Stage]) -> None:
    assert rules.installs_extra(stages, "http")


def test_the_environment_check_itself_rejects_bad_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    problems = settings_problems(
        {"PIPELINE_METRICS__PORT": "not-a-port", "PIPELINE_KAFKA__TOPICS": "petr4"}, monkeypatch, tmp_path
    )
    assert len(problems) == 1 and "metrics.port" in problems[0]
    assert settings_problems({"PIPELINE_MONGO__URI": "http://x"}, monkeypatch, tmp_path)


def test_kafka_runs_in_kraft_mode_and_advertises_an_address_the_clients_use(
    services: dict[str, Any],
) -> None:
    bootstrap = rules.service_env(services["worker"])["PIPELINE_KAFKA__BOOTSTRAP_SERVERS"]
    assert bootstrap is not None
    assert rules.kraft_problems(services["kafka"], bootstrap) == []
    assert "zookeeper" not in json.dumps(yaml.safe_load(COMPOSE_PATH.read_text())).lower()


def test_topics_are_created_once_kafka_is_healthy(services: dict[str, Any]) -> None:
    assert rules.topic_init_problems(services["topic-init"], TOPICS, partitions=3) == []
    assert services["topic-init"].get("restart") in (None, "no")


def test_kafka_is_the_4x_release_the_tests_run(services: dict[str, Any]) -> None:
    from pipeline.dev.apache_kafka import KAFKA_VERSION

    assert rules.kafka_image_problems(services["kafka"]["image"], KAFKA_VERSION) == []


def test_kafkas_internal_topics_fit_its_single_node(services: dict[str, Any]) -> None:
    assert rules.internal_topic_problems(services["kafka"]) == []


def test_dead_letter_topics_exist_although_topic_auto_creation_is_off(services: dict[str, Any]) -> None:
    assert rules.service_env(services["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert (
        rules.dead_letter_topic_problems(services["kafka"], services["worker"], services["topic-init"]) == []
    )


def test_mongodb_is_a_replica_set_that_the_worker_writes_to_with_majority(services: dict[str, Any]) -> None:
    uri = rules.service_env(services["worker"])["PIPELINE_MONGO__URI"] or ""
    assert rules.replica_set_problems(services["mongo"], "mongo:27017", uri) == []
    assert rules.replica_set_name(services["mongo"]["command"]) == "rs0"
    # With credentials, a replica set needs a key file for its internal authentication.
    assert "--keyFile" in " ".join(services["mongo"]["command"])


def test_secrets_are_not_committed(services: dict[str, Any]) -> None:
    ignored = [line.strip() for line in (REPO / ".gitignore").read_text().splitlines()]
    assert ".env" in ignored
    active, commented = rules.parse_env_file(ENV_EXAMPLE_PATH.read_text())
    assert not any("PASSWORD" in name for name in active), "passwords in .env.example must stay commented"
    assert "MONGO_PASSWORD" in commented, ".env.example must show how to turn MongoDB authentication on"
    raw = yaml.safe_load(COMPOSE_PATH.read_text())
    for name, service in raw["services"].items():
        for key, value in rules.service_env(service).items():
            if "PASSWORD" in key:
                assert value is None or value.startswith("${"), f"{name}: {key} is hard-coded"


def test_dockerfile_is_multi_stage_unprivileged_and_without_test_servers(stages: list[rules.Stage]) -> None:
    assert rules.dockerfile_problems(stages, METRICS_PORT) == []
    bases = {stage.base for stage in stages}
    assert len(bases) == 1 and next(iter(bases)).startswith("python:3.11."), bases
    assert stages[-1].base.endswith("-slim-bookworm") or "-slim" in stages[-1].base


def test_build_context_holds_only_what_the_wheel_needs(stages: list[rules.Stage]) -> None:
    sources = rules.copy_sources(stages)
    assert sources, "the Dockerfile copies nothing from the build context"
    assert (
        rules.dockerignore_problems(
            DOCKERIGNORE_PATH.read_text(), sources, [".git", ".venv", ".env", "tests", ".data"]
        )
        == []
    )


# ---- the rules catch what they are meant to catch ---------------------------------------------------------


def test_interpolation_follows_compose_semantics() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert rules.interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d}", env) == "v d d"
    assert rules.interpolate("${EMPTY-d} ${UNSET-d}", env) == " d"
    assert rules.interpolate("${SET:+alt}|${EMPTY:+alt}|$SET|${UNSET}", env) == "alt||v|"
    assert rules.interpolate("$$HOME $${x[@]}", env) == "$HOME ${x[@]}"
    with pytest.raises(rules.InterpolationError):
        rules.interpolate("${UNSET:?must be set}", env)
    with pytest.raises(rules.InterpolationError):
        rules.interpolate("${SET", env)
    assert rules.parse_env_file("A=1\n# B=2\n#comment\nC='x y'\n") == ({"A": "1", "C": "x y"}, {"B": "2"})


@pytest.mark.parametrize(
    "image, ok",
    [
        ("apache/kafka:3.9.1", True),
        ("python:3.11.13-slim-bookworm", True),
        ("mongo@sha256:" + "a" * 64, True),
        ("mongo", False),
        ("mongo:latest", False),
        ("python:3.11-slim", False),
        ("registry:5000/team/app", False),
        ("app:8.0.1-latest", False),
    ],
)
def test_image_pin_rule(image: str, ok: bool) -> None:
    assert (rules.image_pin_problem(image) is None) == ok
    problems = rules.image_problems({"svc": {"image": image}})
    assert (problems == []) == ok
    assert rules.image_problems({"svc": {}}) == ["svc: neither image nor build"]


def test_healthcheck_and_depends_on_rules() -> None:
    services: dict[str, Any] = {
        "db": {"image": "db:1.0.0"},
        "off": {"image": "x:1.0.0", "healthcheck": {"disable": True}},
        "init": {"image": "x:1.0.0", "restart": "always"},
        "app": {
            "build": ".",
            "depends_on": {
                "db": {"condition": "service_healthy"},
                "init": {"condition": "service_completed_successfully"},
                "ghost": {"condition": "service_healthy"},
                "off": {},
            },
        },
        "short": {"build": ".", "depends_on": ["db"]},
    }
    assert rules.healthcheck_problems(services, {"app": True, "short": True}) == [
        "db: long-running service without a healthcheck",
        "off: long-running service without a healthcheck",
        "init: a one-shot service must not be restarted ('always')",
    ]
    assert rules.depends_on_problems(services, {}) == [
        "app: waits for 'db' to be healthy, but it has no healthcheck",
        "app: depends on unknown service 'ghost'",
        "app: depends on 'off' without a valid condition (None)",
        "short: depends_on must name a condition for each service (long form)",
    ]
    services["db"]["healthcheck"] = {"test": ["CMD", "true"]}
    assert rules.depends_on_problems({"db": services["db"], "app": {"depends_on": {"db": {}}}}, {}) == [
        "app: depends on 'db' without a valid condition (None)"
    ]


def test_volume_port_and_scaling_rules() -> None:
    compose = {
        "services": {
            "a": {"volumes": ["data:/var/data", "./local:/x", "/abs:/y", "undeclared:/z"]},
            "b": {"volumes": [{"type": "volume", "source": "data", "target": "/d"}]},
        },
        "volumes": {"data": None, "orphan": None},
    }
    assert rules.volume_problems(compose) == [
        "a: named volume 'undeclared' is not declared under volumes:",
        "volume 'orphan' is declared but no service uses it",
    ]
    assert rules.mounts_of(compose["services"]["a"]) == {"/var/data": "data", "/z": "undeclared"}
    worker = {"container_name": "w", "ports": ["9108:9108"]}
    assert len(rules.scalable_problems("worker", worker)) == 2
    assert rules.published_port_problems({"w": worker, "k": {"ports": ["127.0.0.1:1:1"]}}) == [
        "w: port '9108:9108' is published on every interface"
    ]


@pytest.mark.parametrize(
    "variable, ok",
    [
        ("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", True),
        ("pipeline_kafka__bootstrap_servers", True),
        ("PIPELINE_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS", True),
        ("PIPELINE_KAFKA__SECURITY__SASL_PASSWORD", True),
        ("PIPELINE_TOPICS__PETR4__TIMESERIES__GRANULARITY", True),
        ("PIPELINE_TOPICS", True),
        ("PIPELINE_CONFIG", True),
        ("PIPELINE_KAFKA__BOOTSTRAP_SERVER", False),
        ("PIPELINE_NOPE", False),
        ("PIPELINE_METRICS__PORT__X", False),
        ("PIPELINE_TOPICS__PETR4__NOPE", False),
        ("PIPELINE_METRICS_PORT", False),
    ],
)
def test_config_key_rule(variable: str, ok: bool) -> None:
    assert (rules.config_key_problem(variable, Settings) is None) == ok
    assert rules.pipeline_variables(f"x: ${{{variable}:-1}} # and {variable}") == {variable}


GOOD_DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG PY=python:3.11.13-slim-bookworm
FROM ${PY} AS build
RUN python -m venv /opt/venv \\
    && /opt/venv/bin/pip install .
FROM python:3.11.13-slim-bookworm
COPY --from=build /opt/venv /opt/venv
USER 10001
EXPOSE 9108
HEALTHCHECK --interval=5s \\
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz')"]
ENTRYPOINT ["pipeline"]
CMD ["run"]
"""


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            "FROM python:3.11.13-slim-bookworm\nCOPY --from=build /opt/venv /opt/venv\n",
            "",
            "not a multi-stage",
        ),
        ("USER 10001\n", "", "runs as root (no USER)"),
        ("USER 10001\n", "USER root\n", "runs as root (USER root)"),
        ("USER 10001\n", "USER 0:0\n", "runs as root (USER 0:0)"),
        ("ARG PY=python:3.11.13-slim-bookworm", "ARG PY=python:3.11-slim", "not pinned to a patch version"),
        ("FROM python:3.11.13-slim-bookworm\n", "FROM python\n", "has no tag"),
        ("pip install .", "pip install '.[embedded]'", "installs test-only extras"),
        ("pip install .", "pip install .[dev,analytics]", "installs test-only extras"),
        ("pip install .", "pip install . secantusdb", "installs test-only extras"),
        ("USER 10001\n", "RUN apt-get install -y build-essential\nUSER 10001\n", "installs build tools"),
        ("USER 10001\n", "RUN apt-get install -y gcc\nUSER 10001\n", "installs build tools"),
        ("HEALTHCHECK --interval=5s", "HEALTHCHECK NONE\n#", "no HEALTHCHECK"),
        ("/healthz", "/metrics", "does not probe the worker's /healthz"),
        ('ENTRYPOINT ["pipeline"]', "ENTRYPOINT pipeline", "ENTRYPOINT must be"),
        ('CMD ["run"]', 'CMD ["produce"]', "CMD must be"),
        ("EXPOSE 9108", "EXPOSE 8080", "metrics port 9108 is not EXPOSEd"),
        ("COPY --from=build /opt/venv /opt/venv", "COPY . /app", "copies nothing from the build stage"),
    ],
)
def test_dockerfile_rules(old: str, new: str, expected: str) -> None:
    assert rules.dockerfile_problems(rules.parse_dockerfile(GOOD_DOCKERFILE), METRICS_PORT) == []
    assert old in GOOD_DOCKERFILE
    bad = rules.parse_dockerfile(GOOD_DOCKERFILE.replace(old, new))
    problems = rules.dockerfile_problems(bad, METRICS_PORT)
    assert any(expected in p for p in problems), problems


def test_dockerignore_rule() -> None:
    sources = ["pyproject.toml", "pipeline/"]
    good = "*\n!pyproject.toml\n!pipeline\n**/__pycache__\n"
    assert rules.dockerignore_problems(good, sources, ["tests"]) == []
    assert rules.dockerignore_problems(".git\n", sources, []) != []
    assert rules.dockerignore_problems("*\n!pyproject.toml\n", sources, []) == [
        "COPY source 'pipeline/' is excluded from the build context"
    ]
    assert rules.dockerignore_problems(good + "!tests/\n", sources, ["tests"]) == [
        "'tests' must not be in the build context"
    ]


KRAFT = {
    "environment": {
        "KAFKA_NODE_ID": 1,
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@kafka:9093",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": "PLAINTEXT://kafka:9092",
    }
}


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"KAFKA_PROCESS_ROLES": "broker"}, "KAFKA_PROCESS_ROLES"),
        ({"KAFKA_CONTROLLER_QUORUM_VOTERS": "2@kafka:9093"}, "does not list node"),
        ({"KAFKA_LISTENERS": "PLAINTEXT://:9092"}, "controller listener"),
        ({"KAFKA_ZOOKEEPER_CONNECT": "zk:2181"}, "ZooKeeper"),
        ({"KAFKA_ADVERTISED_LISTENERS": "PLAINTEXT://localhost:9092"}, "not an advertised listener"),
    ],
)
def test_kraft_rule(change: dict[str, str], expected: str) -> None:
    assert rules.kraft_problems(KRAFT, "kafka:9092") == []
    bad = {"environment": {**KRAFT["environment"], **change}}
    assert any(expected in p for p in rules.kraft_problems(bad, "kafka:9092"))


@pytest.mark.parametrize(
    "image, expected",
    [
        ("apache/kafka:4.4.0", []),
        ("apache/kafka:3.9.1", ["the stack runs the Kafka 4 line", "the test-suite runs Kafka 4.4.0"]),
        ("apache/kafka:4.3.1", ["the test-suite runs Kafka 4.4.0"]),
        ("confluentinc/cp-kafka:8.0.0", ["not Apache Kafka's image", "the test-suite runs Kafka 4.4.0"]),
        ("apache/kafka:latest", ["not a Kafka release"]),
    ],
)
def test_kafka_image_rule(image: str, expected: list[str]) -> None:
    problems = rules.kafka_image_problems(image, "4.4.0")
    assert len(problems) == len(expected), problems
    assert all(word in problem for word, problem in zip(expected, problems, strict=True)), problems


def test_internal_topic_rule() -> None:
    single = {"environment": {**KRAFT["environment"], **dict.fromkeys(rules.INTERNAL_TOPIC_SETTINGS, 1)}}
    assert rules.internal_topic_problems(single) == []
    unset = {"environment": {**single["environment"]}}
    del unset["environment"]["KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR"]
    assert rules.internal_topic_problems(unset) == [
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR unset (Kafka's default 3) on a 1-node "
        "cluster: share groups cannot start"
    ]
    too_many = {"environment": {**single["environment"], "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": 2}}
    assert rules.internal_topic_problems(too_many) == [
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=2 on a 1-node cluster: transactions cannot complete"
    ]
    three = {
        "environment": {
            **KRAFT["environment"],
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@k1:9093,2@k2:9093,3@k3:9093",
        }
    }
    assert rules.internal_topic_problems(three) == []  # Kafka's defaults fit three nodes


def test_dead_letter_topic_rule() -> None:
    kafka = {"environment": {"KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false"}}
    no_dlq = {"command": ["bash", "-c", "kafka-topics.sh --create --if-not-exists --topic petr4"]}
    with_dlq = {
        "command": ["bash", "-c", 'for t in petr4; do kafka-topics.sh --create --topic "$t.dlq"; done']
    }
    refused = {"environment": {"PIPELINE_ERRORS__DEAD_LETTER__CREATE_TOPICS": "false"}}
    assert rules.dead_letter_topic_problems(kafka, {}, no_dlq) == []  # the worker creates them
    assert rules.dead_letter_topic_problems(kafka, refused, with_dlq) == []
    assert rules.dead_letter_topic_problems({}, refused, no_dlq) == []  # the broker auto-creates them
    (problem,) = rules.dead_letter_topic_problems(kafka, refused, no_dlq)
    assert "topic-init does not create the '{topic}.dlq' topics" in problem
    renamed = {
        "environment": {**refused["environment"], "PIPELINE_ERRORS__DEAD_LETTER__TOPIC": "{topic}-dead"}
    }
    assert rules.dead_letter_topic_problems(kafka, renamed, with_dlq) != []


MONGO = {
    "command": ["mongod", "--replSet", "rs0"],
    "healthcheck": {
        "test": [
            "CMD-SHELL",
            'mongosh --eval \'try { rs.status() } catch (e) { rs.initiate({_id: "rs0", '
            'members: [{_id: 0, host: "mongo:27017"}]}) } if (!db.hello().isWritablePrimary) quit(1)\'',
        ]
    },
}
URI = "mongodb://mongo:27017/?replicaSet=rs0&w=majority"


@pytest.mark.parametrize(
    "mongo, uri, expected",
    [
        ({**MONGO, "command": ["mongod"]}, URI, "does not run with --replSet"),
        ({**MONGO, "healthcheck": {"test": ["CMD", "true"]}}, URI, "nothing initiates"),
        ({**MONGO, "command": ["mongod", "--replSet", "other"]}, URI, "does not initiate the replica set"),
        (MONGO, URI.replace("replicaSet=rs0&", ""), "replicaSet=rs0"),
        (MONGO, URI.replace("&w=majority", ""), "w=majority"),
    ],
)
def test_replica_set_rule(mongo: dict[str, Any], uri: str, expected: str) -> None:
    assert rules.replica_set_problems(MONGO, "mongo:27017", URI) == []
    problems = rules.replica_set_problems(mongo, "mongo:27017", uri)
    assert any(expected in p for p in problems), problems
    assert rules.replica_set_problems(MONGO, "db:27017", URI) == [
        "rs.initiate does not name the member 'db:27017' that clients can resolve"
    ]


def test_topic_init_rule() -> None:
    good = {
        "command": [
            "bash",
            "-c",
            "for t in petr4 vale3; do /opt/kafka/bin/kafka-topics.sh --create --if-not-exists "
            '--topic "$t" --partitions 3; done',
        ]
    }
    assert rules.topic_init_problems(good, TOPICS, 3) == []
    assert rules.topic_init_problems(good, ["petr4", "itub4"], 3) == ["does not create topic 'itub4'"]
    assert rules.topic_init_problems(good, TOPICS, 6) == ["does not create 6 partitions"]
    no_tool = {"command": ["bash", "-c", "echo petr4 vale3 --create --if-not-exists --partitions 3"]}
    assert rules.topic_init_problems(no_tool, TOPICS, 3) == ["does not use /opt/kafka/bin/kafka-topics.sh"]


WEB = {
    "command": ["serve"],
    "environment": {
        "PIPELINE_HTTP__HOST": "0.0.0.0",
        "PIPELINE_HTTP__PORT": 8080,
        "PIPELINE_HTTP__TOKEN": "${T:-}",
    },
    "ports": ["127.0.0.1:8080:8080"],
    "depends_on": {"mongo": {"condition": "service_healthy"}},
    "healthcheck": {"test": ["CMD", "python", "-c", "urlopen('http://127.0.0.1:8080/healthz')"]},
}


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"command": ["run"]}, "command must be ['serve']"),
        ({"environment": {**WEB["environment"], "PIPELINE_HTTP__HOST": "127.0.0.1"}}, "must be 0.0.0.0"),
        ({"ports": ["127.0.0.1:8080:9090"]}, "neither published nor exposed"),
        ({"healthcheck": {"test": ["CMD", "true"]}}, "does not probe /healthz"),
        (
            {"healthcheck": {"test": ["CMD", "python", "-c", "urlopen('http://127.0.0.1:9108/healthz')"]}},
            "does not probe the HTTP port 8080",
        ),
        ({"depends_on": {"kafka": {"condition": "service_healthy"}}}, "does not wait for MongoDB"),
        ({"environment": {**WEB["environment"], "PIPELINE_HTTP__TOKEN": "hunter2"}}, "written into the file"),
    ],
)
def test_web_rule(change: dict[str, Any], expected: str) -> None:
    assert rules.web_problems(WEB) == []
    problems = rules.web_problems({**WEB, **change})
    assert any(expected in p for p in problems), problems


def test_extra_install_rule() -> None:
    def stages(run: str) -> list[rules.Stage]:
        return rules.parse_dockerfile(f"FROM python:3.11.13-slim-bookworm\nRUN {run}\n")

    assert rules.installs_extra(stages('pip install "$(ls /wheels/tickpipe-*.whl)[http]"'), "http")
    assert rules.installs_extra(stages("pip install '.[http,analytics]'"), "http")
    assert not rules.installs_extra(stages("pip install /wheels/tickpipe-*.whl"), "http")
    assert not rules.installs_extra(stages("pip install '.[analytics]'"), "http")
