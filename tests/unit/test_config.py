"""Unit tests for pipeline.ops.config: YAML + environment loading, validation and error lines, redaction."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from pipeline.ops.config import (
    ConfigError,
    Settings,
    env_var_for,
    load_settings,
    redacted_dump,
    resolve_config_path,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "config" / "pipeline.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PIPELINE_* variables from the outside, and no config/pipeline.yaml discovered from the cwd."""
    for name in list(os.environ):
        if name.upper().startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_yaml_config(tmp_path: Path, text: str) -> Settings:
    return load_settings(write(tmp_path, text))


def config_error(*args: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)
    assert str(info.value) == "\n".join(info.value.lines)
    assert all(line.startswith("config error: ") for line in info.value.lines)
    return info.value.lines


def yaml_error(tmp_path: Path, text: str) -> list[str]:
    return config_error(write(tmp_path, text))


# --- defaults and sources -----------------------------------------------------------------------------------


def test_defaults_without_any_file_or_env() -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.topics == ["petr4", "vale3"]
    assert settings.kafka.group_id == "tickpipe"
    assert settings.kafka.security.protocol == "PLAINTEXT"
    assert settings.mongo.uri.get_secret_value() == "mongodb://127.0.0.1:27017/?directConnection=true"
    assert settings.mongo.database == "market"
    assert settings.mongo.write_concern.w == "majority"
    assert settings.mongo.write_concern.j is True
    assert (settings.batch.max_messages, settings.batch.max_wait_ms, settings.batch.max_in_flight) == (
        1000,
        200,
        4,
    )
    assert settings.errors.tolerance == "data"
    assert settings.errors.dead_letter.topic == "{topic}.dlq"
    assert settings.errors.dead_letter.collection == "dead_letters"
    assert settings.metrics.port == 9108
    assert settings.topics == {}


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    assert load_yaml_config(tmp_path, "# only a comment\n") == load_settings()


def test_yaml_values_override_defaults(tmp_path: Path) -> None:
    settings = load_yaml_config(
        tmp_path,
        "kafka:\n  topics: [ticks]\n  group_id: g1\nbatch:\n  max_messages: 5\nmongo:\n  database: db1\n",
    )
    assert settings.kafka.topics == ["ticks"]
    assert settings.kafka.group_id == "g1"
    assert settings.batch.max_messages == 5
    assert settings.batch.max_wait_ms == 200  # untouched keys keep their defaults
    assert settings.mongo.database == "db1"


def test_env_overrides_yaml_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_BATCH__MAX_MESSAGES", "9")
    settings = load_yaml_config(tmp_path, "batch:\n  max_messages: 5\n  max_wait_ms: 7\n")
    assert settings.batch.max_messages == 9
    assert settings.batch.max_wait_ms == 7


def test_env_override_nested_keys_and_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_MONGO__WRITE_CONCERN__W", "2")
    monkeypatch.setenv("pipeline_kafka__group_id", "lower")
    monkeypatch.setenv("PIPELINE_LOG__LEVEL", "debug")
    settings = load_settings()
    assert settings.mongo.write_concern.w == 2
    assert settings.kafka.group_id == "lower"
    assert settings.log.level == "DEBUG"


def test_keyword_overrides_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_BATCH__MAX_MESSAGES", "9")
    assert load_settings(batch={"max_messages": 3}).batch.max_messages == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("petr4,vale3", ["petr4", "vale3"]),
        (" a , b,,c ,", ["a", "b", "c"]),
        ("single", ["single"]),
        ('["x", "^ticks\\\\..*"]', ["x", "^ticks\\..*"]),
        ('  ["only"]', ["only"]),
    ],
)
def test_topics_from_env_comma_separated_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA__TOPICS", value)
    assert load_settings().kafka.topics == expected


def test_topics_from_env_with_bad_json_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA__TOPICS", '["x"')
    [line] = config_error()
    assert line.startswith("config error: kafka.topics: ")
    assert "PIPELINE_KAFKA__TOPICS" in line


def test_maps_from_env_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_MONGO__COLLECTIONS", '{"petr4": "ticks_petr4"}')
    monkeypatch.setenv("PIPELINE_KAFKA__CONSUMER", '{"fetch.min.bytes": 10}')
    settings = load_settings()
    assert settings.mongo.collections == {"petr4": "ticks_petr4"}
    assert settings.kafka.consumer == {"fetch.min.bytes": 10}


def test_bad_json_map_from_env_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_MONGO__COLLECTIONS", '{"petr4":')
    [line] = config_error()
    assert "mongo" in line
    assert "JSON expected" in line


# --- config file discovery ----------------------------------------------------------------------------------


def test_default_file_is_discovered_relative_to_cwd(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "pipeline.yaml").write_text("batch:\n  max_messages: 7\n")
    assert resolve_config_path(None) == Path("config/pipeline.yaml")
    assert load_settings().batch.max_messages == 7


def test_no_default_file_means_no_path(tmp_path: Path) -> None:
    assert resolve_config_path(None) is None


def test_pipeline_config_env_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "batch:\n  max_messages: 11\n", "other.yaml")
    monkeypatch.setenv("PIPELINE_CONFIG", str(path))
    # PIPELINE_CONFIG is not a config section and must not be reported as an unknown variable.
    assert load_settings().batch.max_messages == 11


def test_explicit_path_beats_pipeline_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_CONFIG", str(write(tmp_path, "batch:\n  max_messages: 11\n", "env.yaml")))
    explicit = write(tmp_path, "batch:\n  max_messages: 12\n", "explicit.yaml")
    assert load_settings(explicit).batch.max_messages == 12
    assert load_settings(str(explicit)).batch.max_messages == 12


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    [line] = config_error(tmp_path / "missing.yaml")
    assert line == (
        f"config error: cannot read config file {str(tmp_path / 'missing.yaml')!r}: No such file or directory"
    )


# --- example configuration ----------------------------------------------------------------------------------


def test_example_config_loads_cleanly() -> None:
    settings = load_settings(EXAMPLE_CONFIG)
    assert settings.kafka.topics == ["petr4", "vale3"]
    assert settings.errors.tolerance == "data"
    assert settings.mongo.write_concern.w == "majority"
    assert settings.metrics.port == 9108


def test_example_config_with_tolerance_data_and_no_dead_letter_destination_is_rejected(
    tmp_path: Path,
) -> None:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["errors"] = {"tolerance": "data", "dead_letter": {"topic": None, "collection": None}}
    [line] = yaml_error(tmp_path, yaml.safe_dump(data))
    assert line == (
        "config error: errors: tolerance 'data' needs a dead-letter destination "
        "(dead_letter.topic or .collection) [file key errors or env PIPELINE_ERRORS]"
    )


def test_tolerance_none_needs_no_dead_letter_destination(tmp_path: Path) -> None:
    settings = load_yaml_config(
        tmp_path, "errors:\n  tolerance: none\n  dead_letter: {topic: null, collection: null}\n"
    )
    assert settings.errors.tolerance == "none"


def test_one_dead_letter_destination_is_enough(tmp_path: Path) -> None:
    settings = load_yaml_config(tmp_path, "errors:\n  dead_letter: {topic: null}\n")
    assert settings.errors.dead_letter.topic is None
    assert settings.errors.dead_letter.collection == "dead_letters"


# --- error lines --------------------------------------------------------------------------------------------


def test_unknown_yaml_key_names_the_key_and_the_nearest_known_one(tmp_path: Path) -> None:
    [line] = yaml_error(tmp_path, "kafka:\n  bootstrap_server: h:1\n")
    assert line == (
        "config error: kafka.bootstrap_server: unknown key; did you mean kafka.bootstrap_servers? "
        "[file key kafka.bootstrap_server or env PIPELINE_KAFKA__BOOTSTRAP_SERVER]"
    )


@pytest.mark.parametrize(
    ("text", "suggested"),
    [
        ("kafak:\n  topics: [a]\n", "did you mean kafka?"),
        ("mongo:\n  write_concern: {jj: true}\n", "did you mean mongo.write_concern.j?"),
        ("topics:\n  vale3:\n    write_modle: latest\n", "did you mean topics.vale3.write_model?"),
        ("batch:\n  max_mesages: 5\n", "did you mean batch.max_messages?"),
    ],
)
def test_unknown_keys_suggest_the_nearest_key_at_their_level(
    tmp_path: Path, text: str, suggested: str
) -> None:
    [line] = yaml_error(tmp_path, text)
    assert "unknown key; " + suggested in line


def test_an_unknown_key_far_from_any_known_one_gets_no_suggestion(tmp_path: Path) -> None:
    [line] = yaml_error(tmp_path, "kafka:\n  zzzzzz: 1\n")
    assert "unknown key [" in line and "did you mean" not in line


def test_unknown_env_variables_suggest_the_nearest_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA__BOOTSTRAP_SERVER", "h:1")
    monkeypatch.setenv("PIPELINE_MONOG__URI", "mongodb://h/")
    lines = config_error()
    assert any(
        "kafka.bootstrap_server: unknown key; did you mean kafka.bootstrap_servers?" in x for x in lines
    )
    assert any(
        "PIPELINE_MONOG__URI does not match" in x and "did you mean PIPELINE_MONGO__URI?" in x for x in lines
    )


def test_unknown_top_level_yaml_section(tmp_path: Path) -> None:
    [line] = yaml_error(tmp_path, "kafak:\n  topics: [a]\n")
    assert line.startswith("config error: kafak: unknown key")


def test_unknown_env_key_inside_a_known_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA__NOPE", "1")
    [line] = config_error()
    assert line.startswith("config error: kafka.nope: unknown key")
    assert "PIPELINE_KAFKA__NOPE" in line


@pytest.mark.parametrize("name", ["PIPELINE_FOO", "PIPELINE_FOO__BAR", "PIPELINE_KAFKABOOTSTRAP"])
def test_unknown_env_section_is_reported(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "1")
    lines = config_error()
    matching = [line for line in lines if f"environment variable {name} " in line]
    assert len(matching) == 1
    assert "does not match any config key" in matching[0]
    assert "kafka" in matching[0] and "mongo" in matching[0]  # lists the valid sections


def test_unknown_env_section_is_reported_alongside_validation_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_FOO", "1")
    lines = yaml_error(tmp_path, "batch:\n  max_messages: 0\n")
    assert any("PIPELINE_FOO" in line for line in lines)
    assert any(line.startswith("config error: batch.max_messages:") for line in lines)


def test_invalid_value_in_yaml_names_key_env_var_and_value(tmp_path: Path) -> None:
    [line] = yaml_error(tmp_path, "batch:\n  max_messages: 0\n")
    assert line == (
        "config error: batch.max_messages: Input should be greater than or equal to 1 (got 0) "
        "[file key batch.max_messages or env PIPELINE_BATCH__MAX_MESSAGES]"
    )


def test_invalid_value_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_BATCH__MAX_MESSAGES", "lots")
    [line] = config_error()
    assert line.startswith("config error: batch.max_messages: Input should be a valid integer")
    assert "(got 'lots')" in line
    assert line.endswith("[file key batch.max_messages or env PIPELINE_BATCH__MAX_MESSAGES]")


def test_several_problems_give_several_lines(tmp_path: Path) -> None:
    lines = yaml_error(tmp_path, "batch:\n  max_messages: 0\n  max_in_flight: 100\nlog:\n  format: xml\n")
    keys = sorted(line.split(":")[1].strip() for line in lines)
    assert keys == ["batch.max_in_flight", "batch.max_messages", "log.format"]


def test_secret_values_are_never_echoed_in_errors(tmp_path: Path) -> None:
    lines = yaml_error(
        tmp_path, "mongo:\n  uri: 918273645\nkafka:\n  security:\n    ssl_key_password: 56473829\n"
    )
    text = "\n".join(lines)
    assert "mongo.uri" in text
    assert "kafka.security.ssl_key_password" in text
    assert "918273645" not in text
    assert "56473829" not in text


def test_env_var_for() -> None:
    assert env_var_for(("batch", "max_messages")) == "PIPELINE_BATCH__MAX_MESSAGES"
    assert env_var_for(("mongo", "write_concern", "w")) == "PIPELINE_MONGO__WRITE_CONCERN__W"


# --- YAML problems ------------------------------------------------------------------------------------------


def test_bad_yaml_syntax_is_one_line_with_position(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  topics: [a, b\nbatch:\n  max_messages: 1\n")
    [line] = config_error(path)
    assert line.startswith(f"config error: {path} is not valid YAML at line ")
    assert ", column " in line


def test_bad_yaml_indentation_reports_the_right_line(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  group_id: a\n bad: [\n")
    [line] = config_error(path)
    assert " at line 3, column 2: " in line


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")]
)
def test_yaml_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    assert config_error(path) == [f"config error: {path} must contain a mapping of sections, not {kind}"]


# --- kafka section ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["enable.auto.commit", "enable.auto.offset.store", "bootstrap.servers", "group.id", "auto.offset.reset"],
)
def test_managed_librdkafka_consumer_keys_are_rejected(tmp_path: Path, key: str) -> None:
    [line] = yaml_error(tmp_path, f"kafka:\n  consumer:\n    {key}: x\n")
    assert line.startswith(f"config error: kafka.consumer: {key!r} cannot be set here: ")
    assert "PIPELINE_KAFKA__CONSUMER" in line


def test_managed_key_in_env_consumer_map_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA__CONSUMER", '{"enable.auto.commit": true}')
    [line] = config_error()
    assert "'enable.auto.commit' cannot be set here: the worker commits offsets itself" in line


def test_managed_producer_key_is_rejected_but_others_pass(tmp_path: Path) -> None:
    [line] = yaml_error(tmp_path, "kafka:\n  producer: {bootstrap.servers: h:1}\n")
    assert "kafka.producer: 'bootstrap.servers' cannot be set here: use kafka.bootstrap_servers" in line
    settings = load_yaml_config(tmp_path, "kafka:\n  consumer: {fetch.min.bytes: 1, check.crcs: true}\n")
    assert settings.kafka.consumer == {"fetch.min.bytes": 1, "check.crcs": True}


@pytest.mark.parametrize(
    ("security", "fragment"),
    [
        ("{protocol: SASL_SSL}", "protocol SASL_SSL needs sasl_mechanism"),
        ("{protocol: SASL_PLAINTEXT}", "protocol SASL_PLAINTEXT needs sasl_mechanism"),
        ("{protocol: SASL_SSL, sasl_mechanism: PLAIN}", "needs sasl_username and sasl_password(_file)"),
        (
            "{protocol: SASL_SSL, sasl_mechanism: PLAIN, sasl_username: u}",
            "needs sasl_username and sasl_password",
        ),
        (
            "{protocol: SASL_SSL, sasl_mechanism: PLAIN} + env password",
            "needs sasl_username and sasl_password",
        ),
    ],
)
def test_sasl_protocol_requires_mechanism_and_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, security: str, fragment: str
) -> None:
    security, with_password, _ = security.partition(" + env password")
    if with_password:
        monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SASL_PASSWORD", "p")
    [line] = yaml_error(tmp_path, f"kafka:\n  security: {security}\n")
    assert line.startswith("config error: kafka.security: ")
    assert fragment in line


def test_sasl_with_env_password_builds_librdkafka_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SASL_PASSWORD", "kafka-pw")
    settings = load_yaml_config(
        tmp_path,
        "kafka:\n  security:\n    protocol: SASL_SSL\n    sasl_mechanism: SCRAM-SHA-512\n"
        "    sasl_username: svc\n    ssl_ca_location: /etc/ca.pem\n",
    )
    assert settings.kafka.security.librdkafka() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "kafka-pw",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.endpoint.identification.algorithm": "https",
    }
    common = settings.kafka.common_librdkafka()
    assert common["bootstrap.servers"] == "127.0.0.1:9092"
    assert common["client.id"] == "tickpipe"
    assert common["sasl.password"] == "kafka-pw"


def test_plaintext_librdkafka_config_is_minimal() -> None:
    assert load_settings().kafka.security.librdkafka() == {"security.protocol": "PLAINTEXT"}


def test_sasl_password_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "kafka_pw"
    secret.write_text("from-file\n")
    settings = load_yaml_config(
        tmp_path,
        "kafka:\n  security: {protocol: SASL_PLAINTEXT, sasl_mechanism: PLAIN, sasl_username: u, "
        f"sasl_password_file: {secret}}}\n",
    )
    assert settings.kafka.security.sasl_password is not None
    assert settings.kafka.security.sasl_password.get_secret_value() == "from-file"


def test_sasl_password_and_file_together_are_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "kafka_pw"
    secret.write_text("x")
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SASL_PASSWORD", "p")
    [line] = yaml_error(tmp_path, f"kafka:\n  security: {{sasl_password_file: {secret}}}\n")
    assert "kafka.security: set only one of sasl_password and sasl_password_file" in line


@pytest.mark.parametrize(
    ("servers", "bad"),
    [("nohost", "'nohost'"), ("h:1,h2", "'h2'"), ("h:port", "'h:port'"), (":9092", "':9092'")],
)
def test_bootstrap_servers_must_be_host_port(tmp_path: Path, servers: str, bad: str) -> None:
    [line] = yaml_error(tmp_path, f"kafka:\n  bootstrap_servers: '{servers}'\n")
    assert line.startswith(f"config error: kafka.bootstrap_servers: {bad} is not host:port")


def test_bootstrap_servers_accepts_lists_with_spaces(tmp_path: Path) -> None:
    settings = load_yaml_config(tmp_path, "kafka:\n  bootstrap_servers: 'a:1, b:2,[::1]:9092'\n")
    assert settings.kafka.bootstrap_servers == "a:1, b:2,[::1]:9092"


@pytest.mark.parametrize(
    ("topics", "fragment"),
    [
        ("['^(']", "topic pattern '^(' is not a valid regular expression"),
        ("['a b']", "topic name 'a b' is not a valid Kafka topic name"),
        ("['..']", "topic name '..' is not a valid Kafka topic name"),
        ("[]", "List should have at least 1 item"),
    ],
)
def test_bad_topics_are_rejected(tmp_path: Path, topics: str, fragment: str) -> None:
    [line] = yaml_error(tmp_path, f"kafka:\n  topics: {topics}\n")
    assert line.startswith("config error: kafka.topics: ")
    assert fragment in line


def test_topic_patterns_are_accepted(tmp_path: Path) -> None:
    settings = load_yaml_config(tmp_path, "kafka:\n  topics: ['^ticks\\..*', plain]\n")
    assert settings.kafka.topics == ["^ticks\\..*", "plain"]


# --- mongo section ------------------------------------------------------------------------------------------


def test_mongo_password_and_uri_from_files(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("mongo-pw\n")
    (tmp_path / "uri").write_text("mongodb://app:uri-pw@db:27017/\n")
    settings = load_yaml_config(
        tmp_path,
        f"mongo:\n  username: app\n  password_file: {tmp_path / 'pw'}\n  uri_file: {tmp_path / 'uri'}\n",
    )
    assert settings.mongo.password is not None
    assert settings.mongo.password.get_secret_value() == "mongo-pw"
    assert settings.mongo.uri.get_secret_value() == "mongodb://app:uri-pw@db:27017/"
    kwargs = settings.mongo.client_kwargs()
    assert kwargs["username"] == "app"
    assert kwargs["password"] == "mongo-pw"
    assert kwargs["serverSelectionTimeoutMS"] == 10_000


def test_mongo_password_and_password_file_together_are_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("x")
    monkeypatch.setenv("PIPELINE_MONGO__PASSWORD", "p")
    [line] = yaml_error(tmp_path, f"mongo:\n  password_file: {tmp_path / 'pw'}\n")
    assert "mongo: set only one of password and password_file" in line


def test_unreadable_secret_file_names_the_key_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    [line] = yaml_error(tmp_path, f"mongo:\n  password_file: {missing}\n")
    assert f"cannot read password_file {str(missing)!r}: No such file or directory" in line


@pytest.mark.parametrize(
    ("mongo", "fragment"),
    [
        ("uri: http://db", "uri must start with mongodb:// or mongodb+srv://"),
        ("database: bad.db", "database name 'bad.db' contains forbidden character(s) '.'"),
        ("collection_template: fixed", "collection_template must contain {topic}"),
        ("collection_template: 'system.{topic}'", "reserved prefix 'system.'"),
        ("collections: {petr4: system.x}", "reserved prefix 'system.'"),
        ("collections: {'bad topic': x}", "topic name 'bad topic' is not a valid Kafka topic name"),
    ],
)
def test_mongo_names_are_validated(tmp_path: Path, mongo: str, fragment: str) -> None:
    [line] = yaml_error(tmp_path, f"mongo:\n  {mongo}\n")
    assert line.startswith("config error: mongo")
    assert fragment in line


@pytest.mark.parametrize(
    ("text", "key", "instead"),
    [
        (
            "mongo:\n  password: hunter2-x\n",
            "mongo.password",
            "set PIPELINE_MONGO__PASSWORD or mongo.password_file",
        ),
        (
            "kafka:\n  security: {sasl_password: hunter2-x}\n",
            "kafka.security.sasl_password",
            "set PIPELINE_KAFKA__SECURITY__SASL_PASSWORD or kafka.security.sasl_password_file",
        ),
        (
            "kafka:\n  security: {ssl_key_password: hunter2-x}\n",
            "kafka.security.ssl_key_password",
            "set PIPELINE_KAFKA__SECURITY__SSL_KEY_PASSWORD",
        ),
        (
            "mongo:\n  uri: 'mongodb://app:hunter2-x@db:27017/'\n",
            "mongo.uri",
            "set PIPELINE_MONGO__URI or mongo.uri_file",
        ),
        (
            "mongo:\n  uri: 'mongodb://db/?tlsCertificateKeyFilePassword=hunter2-x'\n",
            "mongo.uri",
            "set PIPELINE_MONGO__URI or mongo.uri_file",
        ),
        (
            "kafka:\n  consumer: {sasl.password: hunter2-x, fetch.min.bytes: 1}\n",
            "kafka.consumer",
            "set it in PIPELINE_KAFKA__CONSUMER (JSON",
        ),
        (
            "mongo:\n  options: {tlsCertificateKeyFilePassword: hunter2-x}\n",
            "mongo.options",
            "set it in PIPELINE_MONGO__OPTIONS (JSON",
        ),
    ],
)
def test_secrets_in_the_yaml_file_are_refused_naming_where_they_belong(
    tmp_path: Path, text: str, key: str, instead: str
) -> None:
    path = write(tmp_path, text)
    [line] = config_error(path)
    assert line.startswith(f"config error: {key}: ")
    assert f"not accepted in the config file {path}; {instead}" in line
    assert "hunter2" not in line


def test_credential_free_values_stay_allowed_in_the_yaml_file(tmp_path: Path) -> None:
    settings = load_yaml_config(
        tmp_path,
        "mongo:\n  uri: 'mongodb://db1:27017,db2:27017/?replicaSet=rs0&w=majority'\n  username: app\n"
        "  password: null\n  password_file: ''\n  options: {appname: tickpipe}\n"
        "kafka:\n  security: {sasl_username: svc, sasl_password: ''}\n",
    )
    assert settings.mongo.uri.get_secret_value().startswith("mongodb://db1:27017,")
    # A user name alone (X.509, Kerberos) is not a credential.
    x509 = "mongodb://CN=tickpipe@db/?authMechanism=MONGODB-X509"
    assert load_yaml_config(tmp_path, f"mongo:\n  uri: '{x509}'\n").mongo.uri.get_secret_value() == x509


def test_secrets_from_the_environment_merge_with_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_MONGO__PASSWORD", "from-env")
    monkeypatch.setenv("PIPELINE_MONGO__URI", "mongodb://app:uri-pw@db/")
    monkeypatch.setenv("PIPELINE_KAFKA__CONSUMER", '{"sasl.password": "c-pw"}')
    settings = load_yaml_config(
        tmp_path, "mongo:\n  username: app\n  database: db1\nkafka:\n  consumer: {fetch.min.bytes: 1}\n"
    )
    assert settings.mongo.password is not None and settings.mongo.password.get_secret_value() == "from-env"
    assert settings.mongo.uri.get_secret_value() == "mongodb://app:uri-pw@db/"
    assert (settings.mongo.username, settings.mongo.database) == ("app", "db1")
    assert settings.kafka.consumer == {"fetch.min.bytes": 1, "sasl.password": "c-pw"}


def test_secrets_refused_in_the_file_are_reported_with_other_problems(tmp_path: Path) -> None:
    lines = yaml_error(tmp_path, "mongo:\n  password: p\nbatch:\n  max_messages: 0\n")
    assert [line.split(":")[1].strip() for line in lines] == ["mongo.password", "batch.max_messages"]


def test_mongo_srv_uri_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_MONGO__URI", "mongodb+srv://u:p@cluster.example.com/")
    assert load_settings().mongo.uri.get_secret_value() == "mongodb+srv://u:p@cluster.example.com/"


def test_write_concern_w(tmp_path: Path) -> None:
    [line] = yaml_error(tmp_path, "mongo:\n  write_concern: {w: -1}\n")
    assert line.startswith("config error: mongo.write_concern.w: w must be >= 0 or 'majority' (got -1)")
    assert load_yaml_config(tmp_path, "mongo:\n  write_concern: {w: '3'}\n").mongo.write_concern.w == 3
    assert load_yaml_config(tmp_path, "mongo:\n  write_concern: {w: 0}\n").mongo.write_concern.w == 0


# --- other sections -----------------------------------------------------------------------------------------


def test_retry_backoff_order(tmp_path: Path) -> None:
    [line] = yaml_error(tmp_path, "retry:\n  initial_backoff_ms: 500\n  max_backoff_ms: 100\n")
    assert "retry: max_backoff_ms must be >= initial_backoff_ms" in line


def test_dead_letter_names_are_validated(tmp_path: Path) -> None:
    [line] = yaml_error(tmp_path, "errors:\n  dead_letter: {topic: 'bad topic'}\n")
    assert line.startswith("config error: errors.dead_letter: topic name 'bad topic'")
    [line] = yaml_error(tmp_path, "errors:\n  dead_letter: {collection: 'dl$'}\n")
    assert "contains '$'" in line


def test_tick_symbol_pattern_must_compile(tmp_path: Path) -> None:
    [line] = yaml_error(tmp_path, "tick:\n  symbol_pattern: '[a-'\n")
    assert line.startswith("config error: tick.symbol_pattern: not a valid regular expression")


def test_per_topic_options_and_filter(tmp_path: Path) -> None:
    settings = load_yaml_config(
        tmp_path,
        "topics:\n  vale3:\n    format: raw\n    filter: {all: [{field: price, op: gt, value: 10}]}\n",
    )
    options = settings.topic_options("vale3")
    assert options.format == "raw"
    assert options.filter is not None
    default = settings.topic_options("petr4")
    assert (default.format, default.filter) == ("tick", None)


def test_per_topic_keys_must_be_topic_names(tmp_path: Path) -> None:
    [line] = yaml_error(tmp_path, "topics:\n  'bad topic': {}\n")
    assert "topic name 'bad topic' is not a valid Kafka topic name" in line


def test_per_topic_unknown_option(tmp_path: Path) -> None:
    [line] = yaml_error(tmp_path, "topics:\n  vale3:\n    formt: raw\n")
    assert line.startswith("config error: topics.vale3.formt: unknown key")


def test_bad_filter_error_names_real_keys_only(tmp_path: Path) -> None:
    lines = yaml_error(tmp_path, "topics:\n  vale3:\n    filter: {field: price, op: gt, value: [1]}\n")
    text = "\n".join(lines)
    assert "op 'gt' needs a number or a string value" in text
    assert "topics.vale3.filter" in lines[0]
    for internal in ("function-after", "Condition", "AllOf", "AnyOf", "NotOf"):
        assert internal not in text
    assert len(lines) <= 2


# --- redaction ----------------------------------------------------------------------------------------------


def test_secrets_are_secret_str_and_hidden_from_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_MONGO__PASSWORD", "hunter2-mongo")
    monkeypatch.setenv("PIPELINE_MONGO__URI", "mongodb://app:hunter2-uri@db/")
    settings = load_settings()
    assert isinstance(settings.mongo.password, SecretStr)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)


def test_redacted_dump_masks_uri_password_and_secret_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PIPELINE_MONGO__URI", "mongodb://app:uri-pw@db:27017/?tlsCertificateKeyFilePassword=kfp"
    )
    monkeypatch.setenv("PIPELINE_MONGO__PASSWORD", "mongo-pw")
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SASL_USERNAME", "svc")
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SASL_PASSWORD", "kafka-pw")
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SSL_KEY_PASSWORD", "key-pw")
    monkeypatch.setenv(
        "PIPELINE_KAFKA__CONSUMER",
        '{"ssl.keystore.password": "ks-pw", "sasl.oauthbearer.client.secret": "oauth-val", '
        '"fetch.min.bytes": 5}',
    )
    monkeypatch.setenv("PIPELINE_KAFKA__PRODUCER", '{"sasl.password": "prod-pw", "linger.ms": 5}')
    settings = load_settings()
    dump = redacted_dump(settings)
    text = repr(dump)
    for secret in ("uri-pw", "kfp", "mongo-pw", "kafka-pw", "key-pw", "ks-pw", "oauth-val", "prod-pw"):
        assert secret not in text, secret
    assert dump["mongo"]["uri"] == "mongodb://app:***@db:27017/?tlsCertificateKeyFilePassword=***"
    assert dump["kafka"]["security"]["sasl_username"] == "svc"
    assert dump["kafka"]["consumer"]["fetch.min.bytes"] == 5
    assert dump["kafka"]["producer"] == {"sasl.password": "***", "linger.ms": 5}
    assert dump["kafka"]["consumer"]["ssl.keystore.password"] == "***"
    assert dump["batch"]["max_messages"] == 1000
    # the settings themselves are untouched
    assert settings.mongo.uri.get_secret_value().startswith("mongodb://app:uri-pw@")


def test_redacted_dump_masks_secrets_in_mongo_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (In the file such an entry is refused; from the environment it merges with the file's entries.)
    monkeypatch.setenv("PIPELINE_MONGO__OPTIONS", '{"tlsCertificateKeyFilePassword": "kfp-secret"}')
    settings = load_yaml_config(tmp_path, "mongo:\n  options: {appname: tickpipe}\n")
    dump = redacted_dump(settings)
    assert "kfp-secret" not in repr(dump)
    assert dump["mongo"]["options"]["appname"] == "tickpipe"


def test_redacted_dump_masks_inline_private_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA__CONSUMER", '{"ssl.key.pem": "PRIVATE-KEY-PEM"}')
    settings = load_settings()
    assert "PRIVATE-KEY-PEM" not in repr(redacted_dump(settings))


def test_empty_credential_variables_mean_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # docker-compose passes PIPELINE_MONGO__USERNAME="" when authentication is off.
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIPELINE_MONGO__USERNAME", "")
    monkeypatch.setenv("PIPELINE_MONGO__PASSWORD", "  ")
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SASL_USERNAME", "")
    settings = load_settings()
    assert settings.mongo.username is None and settings.mongo.password is None
    assert (
        "username" not in settings.mongo.client_kwargs() and "password" not in settings.mongo.client_kwargs()
    )
    assert settings.kafka.security.sasl_username is None
