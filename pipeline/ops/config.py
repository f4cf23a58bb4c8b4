"""Configuration: a YAML file in config/, every key overridable by PIPELINE_<SECTION>__<KEY> variables.

Precedence, highest first: environment variables, the YAML file, built-in defaults. Everything is validated
at start-up; `load_settings` turns any problem into a `ConfigError` whose lines each name the offending key.
Secrets are `SecretStr` (never printed) and may also be read from files (`*_file` keys).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from pipeline.core.codec import SYMBOL_PATTERN
from pipeline.core.filters import FILTER_TAGS, FilterSpec
from pipeline.core.naming import (
    CollectionRouter,
    NameError_,
    check_collection_name,
    check_database_name,
    check_topic_name,
    is_topic_pattern,
)

ENV_PREFIX = "PIPELINE_"
CONFIG_PATH_ENV = "PIPELINE_CONFIG"
DEFAULT_CONFIG_PATH = Path("config/pipeline.yaml")

# librdkafka properties that the pipeline owns: overriding them would break commit-after-durable-write.
_MANAGED_CONSUMER_KEYS = {
    "enable.auto.commit": "the worker commits offsets itself, only after a durable write",
    "enable.auto.offset.store": "the worker commits explicit offsets",
    "bootstrap.servers": "use kafka.bootstrap_servers",
    "group.id": "use kafka.group_id",
    "auto.offset.reset": "use kafka.auto_offset_reset",
}
_MANAGED_PRODUCER_KEYS = {"bootstrap.servers": "use kafka.bootstrap_servers"}

Scalar = str | int | float | bool


class ConfigError(Exception):
    """Invalid configuration. `lines` holds one human-readable problem per line, each naming its key."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _split_list(value: Any) -> Any:
    """Lists from the environment: JSON (`["a","b"]`) or comma-separated (`a,b`)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _empty_is_unset(value: Any) -> Any:
    """PIPELINE_MONGO__PASSWORD="" (as compose passes when auth is off) means "not set", not "empty"."""
    return None if isinstance(value, str) and not value.strip() else value


def _read_secret_file(path: Path | None, key: str) -> SecretStr | None:
    if path is None:
        return None
    try:
        return SecretStr(path.read_text().strip())
    except OSError as exc:
        raise ValueError(f"cannot read {key} {str(path)!r}: {exc.strerror}") from None


class KafkaSecurity(_Section):
    """TLS and SASL for the brokers, passed to librdkafka. Secrets from env vars or files only."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_endpoint_identification: Literal["https", "none"] = "https"

    _unset_empty = field_validator(
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
        "sasl_password_file",
        "ssl_key_password",
        mode="before",
    )(_empty_is_unset)

    @model_validator(mode="after")
    def _check(self) -> KafkaSecurity:
        from_file = _read_secret_file(self.sasl_password_file, "sasl_password_file")
        if from_file is not None:
            if self.sasl_password is not None:
                raise ValueError("set only one of sasl_password and sasl_password_file")
            self.sasl_password = from_file
        if self.protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError(f"protocol {self.protocol} needs sasl_mechanism (PLAIN, SCRAM-SHA-256/512)")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(f"protocol {self.protocol} needs sasl_username and sasl_password(_file)")
        return self

    def librdkafka(self) -> dict[str, str]:
        conf: dict[str, str] = {"security.protocol": self.protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location:
            conf["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location:
            conf["ssl.key.location"] = str(self.ssl_key_location)
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        if self.protocol in ("SSL", "SASL_SSL"):
            conf["ssl.endpoint.identification.algorithm"] = self.ssl_endpoint_identification
        return conf


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "tickpipe"
    client_id: str = "tickpipe"
    # Topic names, or regular expressions starting with '^' (e.g. "^ticks\\..*").
    topics: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["petr4", "vale3"], min_length=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    # Raw librdkafka properties passed through as-is (validated by librdkafka at start-up).
    consumer: dict[str, Scalar] = Field(default_factory=dict)
    producer: dict[str, Scalar] = Field(default_factory=dict)

    _split_topics = field_validator("topics", mode="before")(_split_list)

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            if is_topic_pattern(topic):
                try:
                    re.compile(topic)
                except re.error as exc:
                    raise ValueError(
                        f"topic pattern {topic!r} is not a valid regular expression: {exc}"
                    ) from None
            else:
                check_topic_name(topic)
        return topics

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server.strip()!r} is not host:port")
        return value

    @field_validator("consumer")
    @classmethod
    def _check_consumer(cls, props: dict[str, Scalar]) -> dict[str, Scalar]:
        for key, why in _MANAGED_CONSUMER_KEYS.items():
            if key in props:
                raise ValueError(f"{key!r} cannot be set here: {why}")
        return props

    @field_validator("producer")
    @classmethod
    def _check_producer(cls, props: dict[str, Scalar]) -> dict[str, Scalar]:
        for key, why in _MANAGED_PRODUCER_KEYS.items():
            if key in props:
                raise ValueError(f"{key!r} cannot be set here: {why}")
        return props

    def common_librdkafka(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            # librdkafka's own log lines go through Python logging (structured, level-filtered).
            "logger": logging.getLogger("kafka"),
            **self.security.librdkafka(),
        }


class WriteConcernConfig(_Section):
    w: int | str = "majority"
    j: bool = True
    wtimeout_ms: int = Field(default=60_000, ge=0)

    @field_validator("w")
    @classmethod
    def _check_w(cls, w: int | str) -> int | str:
        if isinstance(w, str) and w.isdigit():
            return int(w)
        if isinstance(w, int) and w < 0:
            raise ValueError("w must be >= 0 or 'majority'")
        return w


class MongoConfig(_Section):
    # The URI may carry credentials, so it is a secret and is only ever logged redacted.
    uri: SecretStr = SecretStr("mongodb://127.0.0.1:27017/?directConnection=true")
    uri_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    auth_source: str | None = None
    tls: bool | None = None
    tls_ca_file: Path | None = None
    tls_certificate_key_file: Path | None = None
    tls_allow_invalid_certificates: bool = False
    database: str = "market"
    # Collection for a topic: explicit map entry first, else the template ("{topic}" = the topic name).
    collection_template: str = "{topic}"
    collections: dict[str, str] = Field(default_factory=dict)
    # Where topics with write_model insert_and_latest / latest keep the latest tick of each symbol.
    latest_collection: str = "latest"
    write_concern: WriteConcernConfig = Field(default_factory=WriteConcernConfig)
    server_selection_timeout_ms: int = Field(default=10_000, ge=100)
    create_indexes: bool = True
    # Extra keyword arguments for pymongo.MongoClient (e.g. compressors, appname, maxPoolSize).
    options: dict[str, Scalar] = Field(default_factory=dict)

    _unset_empty = field_validator(
        "uri_file", "username", "password", "password_file", "auth_source", "tls", mode="before"
    )(_empty_is_unset)

    @model_validator(mode="after")
    def _check(self) -> MongoConfig:
        uri_from_file = _read_secret_file(self.uri_file, "uri_file")
        if uri_from_file is not None:
            self.uri = uri_from_file
        password_from_file = _read_secret_file(self.password_file, "password_file")
        if password_from_file is not None:
            if self.password is not None:
                raise ValueError("set only one of password and password_file")
            self.password = password_from_file
        uri = self.uri.get_secret_value()
        if not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("uri must start with mongodb:// or mongodb+srv://")
        try:
            check_database_name(self.database)
            for topic, name in self.collections.items():
                check_topic_name(topic)
                check_collection_name(name, self.database)
            if "{topic}" not in self.collection_template:
                raise ValueError("collection_template must contain {topic}")
            check_collection_name(self.latest_collection, self.database)
            check_collection_name(self.collection_template.replace("{topic}", "t"), self.database)
        except NameError_ as exc:
            raise ValueError(str(exc)) from None
        return self

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "serverSelectionTimeoutMS": self.server_selection_timeout_ms,
            **self.options,
        }
        if self.username:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        if self.auth_source:
            kwargs["authSource"] = self.auth_source
        if self.tls is not None:
            kwargs["tls"] = self.tls
        if self.tls_ca_file:
            kwargs["tlsCAFile"] = str(self.tls_ca_file)
        if self.tls_certificate_key_file:
            kwargs["tlsCertificateKeyFile"] = str(self.tls_certificate_key_file)
        if self.tls_allow_invalid_certificates:
            kwargs["tlsAllowInvalidCertificates"] = True
        return kwargs


class BatchConfig(_Section):
    max_messages: int = Field(default=1000, ge=1, le=100_000)
    max_wait_ms: int = Field(default=200, ge=1, le=600_000)
    # Batches handed to the writer but not yet durable. When full, consumption pauses (bounded memory).
    max_in_flight: int = Field(default=2, ge=1, le=64)


class RetryConfig(_Section):
    initial_backoff_ms: int = Field(default=100, ge=1)
    max_backoff_ms: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> RetryConfig:
        if self.max_backoff_ms < self.initial_backoff_ms:
            raise ValueError("max_backoff_ms must be >= initial_backoff_ms")
        return self


class DeadLetterConfig(_Section):
    # Kafka dead-letter topic ("{topic}" = the source topic); null disables it.
    topic: str | None = "{topic}.dlq"
    # MongoDB dead-letter collection in mongo.database; null disables it.
    collection: str | None = "dead_letters"

    @model_validator(mode="after")
    def _check(self) -> DeadLetterConfig:
        try:
            if self.topic is not None:
                check_topic_name(self.topic.replace("{topic}", "t"))
            if self.collection is not None:
                check_collection_name(self.collection)
        except NameError_ as exc:
            raise ValueError(str(exc)) from None
        return self


class ErrorsConfig(_Section):
    # Like Kafka Connect's errors.tolerance: "none" stops at the first bad message (committing nothing past
    # it); "data" dead-letters messages that can never be stored and keeps going. Transient errors (servers
    # unreachable, timeouts, not-primary, write-concern errors) are always retried, never dead-lettered.
    tolerance: Literal["none", "data"] = "data"
    dead_letter: DeadLetterConfig = Field(default_factory=DeadLetterConfig)

    @model_validator(mode="after")
    def _check(self) -> ErrorsConfig:
        if (
            self.tolerance == "data"
            and self.dead_letter.topic is None
            and self.dead_letter.collection is None
        ):
            raise ValueError(
                "tolerance 'data' needs a dead-letter destination (dead_letter.topic or .collection)"
            )
        return self


class TickSchemaConfig(_Section):
    """Validation rules for ticks (format: tick)."""

    symbol_pattern: str = SYMBOL_PATTERN
    min_price: float = Field(default=0.0, description="exclusive lower bound")
    max_price: float = 1e12
    max_volume: int = 2**63 - 1

    @field_validator("symbol_pattern")
    @classmethod
    def _check_pattern(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern


class TimeSeriesOptions(_Section):
    """Store the topic in a MongoDB time-series collection (timeField ts, metaField symbol)."""

    granularity: Literal["seconds", "minutes", "hours"] = "seconds"
    # Delete ticks older than this (MongoDB's expireAfterSeconds); null keeps them forever.
    expire_after_s: int | None = Field(default=None, ge=1)


class TopicOptions(_Section):
    """Per-topic processing options, keyed by exact topic name under `topics:`."""

    # tick: validate and store market ticks; raw: store any JSON object as-is.
    format: Literal["tick", "raw"] = "tick"
    # Declarative filter: only matching messages are stored; the rest are counted and committed.
    filter: FilterSpec | None = None
    # insert: keep every tick (idempotent by _id). insert_and_latest: also upsert the latest tick of each
    # symbol into mongo.latest_collection, in the same batch. latest: keep only the latest tick per symbol.
    write_model: Literal["insert", "insert_and_latest", "latest"] = "insert"
    # A time-series collection instead of a regular one (created when first used).
    timeseries: TimeSeriesOptions | None = None

    @model_validator(mode="after")
    def _check(self) -> TopicOptions:
        if self.format == "raw" and (self.write_model != "insert" or self.timeseries is not None):
            raise ValueError(
                "write_model other than insert, and timeseries, need format: tick (symbol and ts)"
            )
        return self

    @property
    def keeps_history(self) -> bool:
        return self.write_model != "latest"

    @property
    def keeps_latest(self) -> bool:
        return self.write_model != "insert"


class WorkerConfig(_Section):
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    rebalance_timeout_s: float = Field(default=15.0, gt=0)
    startup_timeout_s: float = Field(default=15.0, gt=0)


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # auto: JSON lines when stderr is not a terminal, readable text when it is.
    format: Literal["auto", "json", "text"] = "auto"
    summary_interval_s: float = Field(default=10.0, gt=0)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class MetricsConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    # 0 picks a free port (logged at start-up).
    port: int = Field(default=9108, ge=0, le=65535)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    mongo: MongoConfig = Field(default_factory=MongoConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    errors: ErrorsConfig = Field(default_factory=ErrorsConfig)
    tick: TickSchemaConfig = Field(default_factory=TickSchemaConfig)
    topics: dict[str, TopicOptions] = Field(default_factory=dict)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @field_validator("topics")
    @classmethod
    def _check_topic_keys(cls, topics: dict[str, TopicOptions]) -> dict[str, TopicOptions]:
        for name in topics:
            try:
                check_topic_name(name)
            except NameError_ as exc:
                raise ValueError(str(exc)) from None
        return topics

    @model_validator(mode="after")
    def _check_collections(self) -> Settings:
        """Every configured (non-pattern) topic must map to a valid collection name."""
        router = self.collection_router()
        for topic in self.kafka.topics:
            if not is_topic_pattern(topic):
                try:
                    router.collection_for(topic)
                except NameError_ as exc:
                    raise ValueError(f"kafka.topics: topic {topic!r} cannot be stored: {exc}") from None
        return self

    def collection_router(self) -> CollectionRouter:
        """The topic -> collection mapping these settings define."""
        return CollectionRouter(self.mongo.database, self.mongo.collection_template, self.mongo.collections)

    def topic_options(self, topic: str) -> TopicOptions:
        return self.topics.get(topic) or _DEFAULT_TOPIC_OPTIONS

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls, _yaml_data.get() or {}))


_DEFAULT_TOPIC_OPTIONS = TopicOptions()
_yaml_data: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("_yaml_data", default=None)


class _YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def env_var_for(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _format_validation_error(exc: ValidationError) -> list[str]:
    lines = []
    seen = set()
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if part != "__root__" and part not in FILTER_TAGS)
        key = ".".join(str(part) for part in loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] not in ("missing",) and "input" in error and not _looks_secret(key):
            shown = error["input"]
            if isinstance(shown, str | int | float | bool):
                message += f" (got {shown!r})"
        hint = f" [file key {key} or env {env_var_for(loc)}]" if loc else ""
        line = f"config error: {key}: {message}{hint}" if key else f"config error: {message}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return lines


_SECRET_WORDS = ("password", "uri", "secret", "token", "credential", "key.pem", "authmechanismproperties")


def _looks_secret(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in _SECRET_WORDS)


def _unknown_env_sections() -> list[str]:
    known = {name.upper() for name in Settings.model_fields}
    lines = []
    for name in sorted(os.environ):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_PATH_ENV:
            continue
        section = name[len(ENV_PREFIX) :].split("__", 1)[0]
        if section.upper() not in known:
            lines.append(
                f"config error: environment variable {name} does not match any config key "
                f"(sections: {', '.join(sorted(k.lower() for k in known))})"
            )
    return lines


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"config error: cannot read config file {str(path)!r}: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"config error: {path} is not valid YAML{where}: {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"config error: {path} must contain a mapping of sections, not {type(data).__name__}"]
        )
    return data


def resolve_config_path(explicit: str | Path | None) -> Path | None:
    """--config wins, then $PIPELINE_CONFIG, then config/pipeline.yaml if present, else defaults only."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_PATH_ENV)
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate settings. Raises ConfigError (never a traceback-worthy exception) on any problem."""
    config_path = resolve_config_path(path)
    data = read_yaml(config_path) if config_path is not None else {}
    problems = _unknown_env_sections()
    token = _yaml_data.set(data)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(problems + _format_validation_error(exc)) from None
    except SettingsError as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(
            [*problems, f"config error: {exc}{cause} (JSON expected for maps and lists)"]
        ) from None
    finally:
        _yaml_data.reset(token)
    if problems:
        raise ConfigError(problems)
    return settings


def redacted_dump(settings: Settings) -> dict[str, Any]:
    """The effective configuration with every secret masked, for `pipeline config show` and logs."""
    from pipeline.ops.redact import redact_uri

    data = settings.model_dump(mode="json")
    data["mongo"]["uri"] = redact_uri(settings.mongo.uri.get_secret_value())
    passthrough = [data["kafka"]["consumer"], data["kafka"]["producer"], data["mongo"]["options"]]
    for options in passthrough:
        for key in list(options):
            if _looks_secret(key) or "sasl" in key.lower():
                options[key] = "***"
    return data
