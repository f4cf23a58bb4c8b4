"""The configuration model: one pydantic section per part of the pipeline, each key with its type, default,
constraints and description (`Field(description=...)`, the one place a key is described: the reference in
docs/configuration.md and the example config/pipeline.yaml are generated from it).

Secrets are `SecretStr` (never printed) and marked with `Secret(...)`: they may come from environment
variables or `*_file` keys, never from the YAML file (see `loading.file_secret_problems`).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.core.codec import SYMBOL_PATTERN, PriceType, TickSchema, TsFormat, check_field_mapping
from pipeline.core.filters import FilterSpec
from pipeline.core.naming import (
    CollectionRouter,
    NameError_,
    check_collection_name,
    check_database_name,
    check_topic_name,
    is_topic_pattern,
)
from pipeline.ops.config.sources import ENV_PREFIX, YamlSource

# The choices the configuration declares, for code that handles them (instead of `str`).
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
OffsetReset = Literal["earliest", "latest"]
Tolerance = Literal["none", "data"]
TopicFormat = Literal["tick", "raw"]
WriteModel = Literal["insert", "insert_and_latest", "latest"]
Granularity = Literal["seconds", "minutes", "hours"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["auto", "json", "text"]
GroupProtocol = Literal["classic", "consumer"]
WriteConcurrency = Literal["auto"] | Annotated[int, Field(ge=1, le=64)]

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Secret:
    """Marks a secret key: accepted from its environment variable or from `file_key`, refused in the YAML
    file. `unless_plain`: a value without credentials (a URI with no password) may stay in the file."""

    file_key: str | None = None
    unless_plain: bool = False


@dataclass(frozen=True)
class SecretEntries:
    """Marks a map passed through to a client library: its entries whose key names a secret (password,
    token, ...) are refused in the YAML file; set them through the map's environment variable (JSON)."""


# librdkafka properties that the pipeline owns: overriding them would break commit-after-durable-write.
_MANAGED_CONSUMER_KEYS = {
    "enable.auto.commit": "the worker commits offsets itself, only after a durable write",
    "enable.auto.offset.store": "the worker commits explicit offsets",
    "bootstrap.servers": "use kafka.bootstrap_servers",
    "group.id": "use kafka.group_id",
    "auto.offset.reset": "use kafka.auto_offset_reset",
    "group.protocol": "use kafka.group_protocol",
    "isolation.level": "tickpipe reads committed transactions only (read_uncommitted would store ticks of "
    "aborted transactions)",
}
# With the consumer group protocol (KIP-848) these are decided by the broker, not the client.
_BROKER_SIDE_CONSUMER_KEYS = {
    "session.timeout.ms": "group.consumer.session.timeout.ms",
    "heartbeat.interval.ms": "group.consumer.heartbeat.interval.ms",
    "partition.assignment.strategy": "group.consumer.assignors",
}
_MANAGED_PRODUCER_KEYS = {
    "bootstrap.servers": "use kafka.bootstrap_servers",
    "acks": "dead letters are acknowledged by all in-sync replicas before their offsets are committed",
    "enable.idempotence": "the dead-letter producer is idempotent (no duplicates on its retries)",
    "transactional.id": "tickpipe's producers are not transactional",
}


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
    """TLS and SASL for the brokers, passed to librdkafka."""

    protocol: SecurityProtocol = Field("PLAINTEXT", description="Security protocol to the brokers.")
    sasl_mechanism: SaslMechanism | None = Field(
        None, description="SASL mechanism (required with the SASL protocols).", examples=["SCRAM-SHA-512"]
    )
    sasl_username: str | None = Field(None, description="SASL user name.", examples=["tickpipe"])
    sasl_password: Annotated[SecretStr | None, Secret(file_key="sasl_password_file")] = Field(
        None, description="SASL password (never logged)."
    )
    sasl_password_file: Path | None = Field(
        None,
        description="File holding the SASL password (e.g. a Docker/Kubernetes secret).",
        examples=["/run/secrets/kafka_password"],
    )
    ssl_ca_location: Path | None = Field(
        None,
        description="CA certificate(s) to verify the brokers (PEM file).",
        examples=["/etc/ssl/kafka-ca.pem"],
    )
    ssl_certificate_location: Path | None = Field(
        None, description="Client certificate for mutual TLS (PEM file).", examples=["/etc/ssl/client.pem"]
    )
    ssl_key_location: Path | None = Field(
        None, description="Client private key for mutual TLS (PEM file).", examples=["/etc/ssl/client.key"]
    )
    ssl_key_password: Annotated[SecretStr | None, Secret()] = Field(
        None, description="Password of the client private key (never logged)."
    )
    ssl_endpoint_identification: Literal["https", "none"] = Field(
        "https", description="Verify the broker host name against its certificate."
    )

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
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka brokers, comma-separated `host:port` list."
    )
    group_id: str = Field(
        "tickpipe", description="Consumer group: workers with the same group share the partitions."
    )
    client_id: str = Field("tickpipe", description="Client id reported to the brokers (logs, quotas).")
    topics: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["petr4", "vale3"],
        min_length=1,
        description="Topics to consume, or regular expressions starting with `^` (e.g. `^ticks\\..*`). "
        "From the environment: comma-separated or a JSON list.",
    )
    auto_offset_reset: OffsetReset = Field(
        "earliest", description="Where a consumer group without committed offsets starts."
    )
    group_protocol: GroupProtocol = Field(
        "classic",
        description="Consumer group protocol. `classic`: the client-side rebalance protocol. `consumer`: "
        "the protocol of KIP-848 (Kafka 4.0+): the broker assigns partitions incrementally, and the "
        "session timeout and heartbeat interval are broker settings "
        "(`group.consumer.session.timeout.ms`, `group.consumer.heartbeat.interval.ms`), so "
        "`kafka.session_timeout_ms` does not apply.",
    )
    session_timeout_ms: int = Field(
        10_000,
        ge=1_000,
        le=300_000,
        description="Group session timeout (classic protocol): a worker silent this long loses its "
        "partitions. The broker refuses values outside its `group.min/max.session.timeout.ms`.",
    )
    max_poll_interval_ms: int = Field(
        300_000,
        ge=10_000,
        description="Longest time between two polls before the worker leaves the group.",
    )
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    consumer: Annotated[dict[str, Scalar], SecretEntries()] = Field(
        default_factory=dict,
        description="Raw librdkafka consumer properties, passed through as-is (JSON from the "
        "environment). `enable.auto.commit`, `group.id`, `bootstrap.servers` and `auto.offset.reset` are "
        "managed by tickpipe and rejected here. They override tickpipe's own defaults: "
        "`queued.max.messages.kbytes: 16384` (bounded prefetch) and `fetch.wait.max.ms: 100` (latency on "
        "quiet streams).",
        examples=[{"fetch.min.bytes": 1024}],
    )
    producer: Annotated[dict[str, Scalar], SecretEntries()] = Field(
        default_factory=dict,
        description="Raw librdkafka producer properties (dead-letter topic producer and `pipeline "
        "produce`), passed through as-is (JSON from the environment).",
        examples=[{"compression.type": "zstd"}],
    )

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

    @model_validator(mode="after")
    def _check_group_protocol(self) -> KafkaConfig:
        if self.group_protocol == "consumer":
            default = type(self).model_fields["session_timeout_ms"].default
            if "session_timeout_ms" in self.model_fields_set and self.session_timeout_ms != default:
                raise ValueError(
                    "session_timeout_ms does not apply with group_protocol 'consumer': the session timeout "
                    "is the broker's group.consumer.session.timeout.ms"
                )
            for key, broker_key in _BROKER_SIDE_CONSUMER_KEYS.items():
                if key in self.consumer:
                    raise ValueError(
                        f"consumer: {key!r} does not apply with group_protocol 'consumer': it is the "
                        f"broker's {broker_key}"
                    )
        return self

    @field_validator("producer")
    @classmethod
    def _check_producer(cls, props: dict[str, Scalar]) -> dict[str, Scalar]:
        for key, why in _MANAGED_PRODUCER_KEYS.items():
            if key in props:
                raise ValueError(f"{key!r} cannot be set here: {why}")
        return props

    def redact(self, text: str) -> str:
        """`text` with this configuration's Kafka secret (the SASL password) and any URI password masked."""
        from pipeline.ops.redact import redact_text

        password = self.security.sasl_password
        return redact_text(text, [password.get_secret_value()] if password is not None else [])

    def common_librdkafka(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            # librdkafka's own log lines go through Python logging (structured, level-filtered).
            "logger": logging.getLogger("kafka"),
            **self.security.librdkafka(),
        }


class WriteConcernConfig(_Section):
    w: int | str = Field(
        "majority",
        description="Write concern: acknowledged by this many members, or `majority`. Offsets are "
        "committed only after this acknowledgement.",
    )
    j: bool = Field(True, description="Wait for the journal before acknowledging.")
    wtimeout_ms: int = Field(
        60_000,
        ge=0,
        description="Give up waiting for the write concern after this long (then retried; 0 = no limit).",
    )

    @field_validator("w")
    @classmethod
    def _check_w(cls, w: int | str) -> int | str:
        if isinstance(w, str) and w.isdigit():
            return int(w)
        if isinstance(w, int) and w < 0:
            raise ValueError("w must be >= 0 or 'majority'")
        return w


class MongoConfig(_Section):
    uri: Annotated[SecretStr, Secret(file_key="uri_file", unless_plain=True)] = Field(
        SecretStr("mongodb://127.0.0.1:27017/?directConnection=true"),
        description="MongoDB connection string, always logged with the password masked. Use a replica "
        "set (`replicaSet=...`) for `w: majority`.",
    )
    uri_file: Path | None = Field(
        None,
        description="File holding the connection string (replaces `mongo.uri`).",
        examples=["/run/secrets/mongo_uri"],
    )
    username: str | None = Field(
        None, description="User name (instead of credentials in the URI).", examples=["tickpipe"]
    )
    password: Annotated[SecretStr | None, Secret(file_key="password_file")] = Field(
        None, description="Password (never logged)."
    )
    password_file: Path | None = Field(
        None,
        description="File holding the password (e.g. a Docker/Kubernetes secret).",
        examples=["/run/secrets/mongo_password"],
    )
    auth_source: str | None = Field(
        None,
        description="Database that holds the user (MongoDB's `authSource`, usually `admin`).",
        examples=["admin"],
    )
    tls: bool | None = Field(None, description="Use TLS to MongoDB (default: as the URI says).")
    tls_ca_file: Path | None = Field(
        None,
        description="CA certificate(s) to verify the server (PEM file).",
        examples=["/etc/ssl/mongo-ca.pem"],
    )
    tls_certificate_key_file: Path | None = Field(
        None,
        description="Client certificate and key for X.509 / mutual TLS (PEM file).",
        examples=["/etc/ssl/mongo-client.pem"],
    )
    tls_allow_invalid_certificates: bool = Field(
        False, description="Skip server certificate verification (testing only)."
    )
    database: str = Field("market", description="Database the ticks are stored in.")
    collection_template: str = Field(
        "{topic}", description="Collection for a topic; `{topic}` is replaced by the topic name."
    )
    collections: dict[str, str] = Field(
        default_factory=dict,
        description="Explicit topic → collection names, taking precedence over the template "
        "(JSON from the environment).",
        examples=[{"petr4": "ticks_petr4"}],
    )
    latest_collection: str = Field(
        "latest",
        description="Collection of the latest tick per symbol (topics with `write_model` "
        "`insert_and_latest` or `latest`).",
    )
    write_concern: WriteConcernConfig = Field(default_factory=WriteConcernConfig)
    server_selection_timeout_ms: int = Field(
        10_000, ge=100, description="How long an operation waits for a suitable server."
    )
    create_indexes: bool = Field(
        True, description="Create the `{symbol: 1, ts: 1}` index on every tick collection at start-up."
    )
    verify_topic_identity: bool = Field(
        True,
        description="Record which Kafka topic (its topic id and cluster id) each collection holds ticks "
        "of, and stop with one line if a topic of the same name turns out to be another one (re-created, "
        "or another cluster after a fail-over): its offsets restart and would be taken for "
        "re-deliveries. Turn off only for offset-preserving replication.",
    )
    options: Annotated[dict[str, Scalar], SecretEntries()] = Field(
        default_factory=dict,
        description="Extra keyword arguments for `pymongo.MongoClient` (e.g. `compressors`, `appname`, "
        "`maxPoolSize`; JSON from the environment).",
        examples=[{"compressors": "zstd", "maxPoolSize": 20}],
    )

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
    max_messages: int = Field(
        1000, ge=1, le=100_000, description="A batch is written when it holds this many messages..."
    )
    max_wait_ms: int = Field(
        200,
        ge=1,
        le=600_000,
        description="...or when its first message is this old, whichever comes first.",
    )
    max_in_flight: int = Field(
        4,
        ge=1,
        le=64,
        description="Batches handed to the writer and not yet durable (bounded memory). While that many "
        "are in flight the worker waits for one to finish instead of consuming more; only if the writer "
        "makes no progress for a while (a MongoDB outage) does it pause its partitions.",
    )
    write_concurrency: WriteConcurrency = Field(
        "auto",
        description="Bulk writes sent to MongoDB at once (at most `max_in_flight`). `auto`: start at 1 "
        "and keep a higher number only while it measurably raises throughput (a single-threaded server "
        "is fastest with one write at a time, a replica set or sharded cluster with several); or a "
        "fixed number.",
    )

    @model_validator(mode="after")
    def _check(self) -> BatchConfig:
        if isinstance(self.write_concurrency, int) and self.write_concurrency > self.max_in_flight:
            raise ValueError(
                f"write_concurrency {self.write_concurrency} exceeds max_in_flight {self.max_in_flight}"
            )
        return self


class RetryConfig(_Section):
    initial_backoff_ms: int = Field(
        100,
        ge=1,
        description="First wait after a transient error (exponential backoff with jitter, retried "
        "forever, nothing committed meanwhile).",
    )
    max_backoff_ms: int = Field(10_000, ge=1, description="Longest wait between two retries.")

    @model_validator(mode="after")
    def _check(self) -> RetryConfig:
        if self.max_backoff_ms < self.initial_backoff_ms:
            raise ValueError("max_backoff_ms must be >= initial_backoff_ms")
        return self


class DeadLetterConfig(_Section):
    topic: str | None = Field(
        "{topic}.dlq",
        description="Kafka dead-letter topic (`{topic}` = the source topic; original bytes, reason in "
        "headers); null disables it.",
    )
    collection: str | None = Field(
        "dead_letters",
        description="MongoDB dead-letter collection in `mongo.database`; null disables it.",
    )
    create_topics: bool = Field(
        True,
        description="At start-up (and when a pattern subscription matches a new topic), create each "
        "missing dead-letter topic. When false, or when the broker refuses (no CreateTopics permission), "
        "a missing dead-letter topic stops the worker before it consumes anything, naming the topic.",
    )
    topic_partitions: int = Field(
        1, ge=1, le=10_000, description="Partitions of a created dead-letter topic."
    )
    topic_replication_factor: int = Field(
        -1,
        ge=-1,
        le=32,
        description="Replication factor of a created dead-letter topic; -1: the broker's "
        "`default.replication.factor`.",
    )

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
    tolerance: Tolerance = Field(
        "data",
        description="`none`: stop at the first message that can never be stored, committing nothing "
        "past it. `data`: dead-letter such messages and keep going. Transient errors are always retried.",
    )
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

    symbol_pattern: str = Field(
        SYMBOL_PATTERN, description="Regular expression a tick's `symbol` must match."
    )
    min_price: float = Field(0.0, description="Exclusive lower bound of a tick's `price`.")
    max_price: float = Field(1e12, description="Upper bound of a tick's `price`.")
    max_volume: int = Field(2**63 - 1, description="Upper bound of a tick's `volume`.")
    fields: dict[str, str] | None = Field(
        None,
        description="Where each tick field is read from, for feeds with other field names: `symbol`, "
        "`price`, `volume` and/or `ts` -> the source field, or a dotted path into nested input "
        "(`quote.last`). Documents are stored with the tick names; a top-level source field is not stored "
        "again (a nested path's enclosing object is, as sent); a message that also carries a field under "
        "a mapped tick name is dead-lettered (`conflicting_field`), never dropped. Validation errors name "
        "the source field. Unlisted fields are read from their own name; per topic: `topics.<topic>."
        "fields` (JSON from the environment).",
        examples=[{"symbol": "ticker", "price": "last", "volume": "qty", "ts": "time"}],
    )
    ts_format: TsFormat = Field(
        "iso",
        description="How `ts` is written: `iso` (an ISO-8601 string, no offset = UTC; a number is taken "
        "as epoch milliseconds), or a number of `epoch_s`, `epoch_ms`, `epoch_us` or `epoch_ns` (stored "
        "as a BSON date: millisecond precision). Per topic: `topics.<topic>.ts_format`.",
    )
    price_type: PriceType = Field(
        "double",
        description="How prices are stored: `double` (a BSON double), or `decimal128`: a BSON Decimal128 "
        "made from the number exactly as the JSON text writes it (no float round trip: `38.10` stays "
        "`38.10`; more than 34 significant digits is dead-lettered). Queries, OHLC bars, VWAP, "
        "statistics, exports and charts read both, also mixed in one collection.",
    )

    @field_validator("symbol_pattern")
    @classmethod
    def _check_pattern(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, fields: dict[str, str] | None) -> dict[str, str] | None:
        return None if fields is None else check_field_mapping(fields)


class TimeSeriesOptions(_Section):
    """Store the topic in a MongoDB time-series collection (timeField ts, metaField symbol)."""

    granularity: Granularity = Field("seconds", description="Time-series bucketing granularity.")
    expire_after_s: int | None = Field(
        None,
        ge=1,
        description="Delete ticks older than this (`expireAfterSeconds`); null keeps them forever.",
        examples=[2_592_000],
    )


class TopicOptions(_Section):
    """Per-topic processing options, keyed by exact topic name under `topics:`."""

    format: TopicFormat = Field(
        "tick", description="`tick`: validate and store market ticks. `raw`: store any JSON object as-is."
    )
    filter: FilterSpec | None = Field(
        None,
        description="Declarative filter (`{field, op, value}` conditions combined with `all`, `any`, "
        "`not`): only matching messages are stored; the others are counted and committed.",
        examples=[
            {
                "all": [
                    {"field": "price", "op": "gt", "value": 10},
                    {"field": "volume", "op": "gte", "value": 100},
                ]
            }
        ],
    )
    write_model: WriteModel = Field(
        "insert",
        description="`insert`: keep every tick. `insert_and_latest`: also upsert the latest tick of each "
        "symbol into `mongo.latest_collection`. `latest`: keep only the latest tick.",
    )
    timeseries: TimeSeriesOptions | None = Field(
        None,
        description="Store the topic in a MongoDB time-series collection (timeField `ts`, metaField "
        "`symbol`); null: a regular collection.",
    )
    fields: dict[str, str] | None = Field(
        None,
        description="This topic's field mapping (format: tick): entries override those of `tick.fields` "
        "one tick field at a time.",
        examples=[{"price": "last"}],
    )
    ts_format: TsFormat | None = Field(
        None, description="This topic's `ts` format (format: tick); null: `tick.ts_format`."
    )

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, fields: dict[str, str] | None) -> dict[str, str] | None:
        return None if fields is None else check_field_mapping(fields)

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
    shutdown_timeout_s: float = Field(
        10.0, gt=0, description="On SIGTERM/SIGINT: time allowed to flush and commit before exiting."
    )
    rebalance_timeout_s: float = Field(
        15.0,
        gt=0,
        description="On a partition revoke: time allowed to flush and commit before the partitions move "
        "(otherwise the work is dropped uncommitted and re-delivered).",
    )
    startup_timeout_s: float = Field(
        15.0, gt=0, description="Servers unreachable at start-up: fail (exit 1) after this long."
    )


class LogConfig(_Section):
    level: LogLevel = Field("INFO", description="Log level.")
    format: LogFormat = Field(
        "auto", description="`json` lines, readable `text`, or `auto` (JSON unless stderr is a terminal)."
    )
    summary_interval_s: float = Field(
        10.0,
        gt=0,
        description="Interval of the progress summary log line (and of the consumer lag gauge).",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class MetricsConfig(_Section):
    enabled: bool = Field(
        True, description="Serve Prometheus `/metrics`, `/healthz` (liveness) and `/readyz` (readiness)."
    )
    host: str = Field("127.0.0.1", description="Address the metrics server binds (`0.0.0.0` in a container).")
    port: int = Field(
        9108,
        ge=0,
        le=65535,
        description="Port of the metrics server; 0 picks a free port (logged at start-up).",
    )


class HttpConfig(_Section):
    """`pipeline serve`: the read-only HTTP API and the live chart page."""

    host: str = Field(
        "127.0.0.1",
        description="Address the HTTP server binds (`0.0.0.0` in a container; keep the default on a host "
        "unless a token is set).",
    )
    port: int = Field(
        8080, ge=0, le=65535, description="Port of the HTTP server; 0 picks a free port (logged)."
    )
    token: Annotated[SecretStr | None, Secret(file_key="token_file")] = Field(
        None,
        description="Bearer token required on every request but `/healthz` and `/readyz` "
        "(`Authorization: Bearer <token>`); unset: no authentication. Never logged.",
    )
    token_file: Path | None = Field(
        None,
        description="File holding the bearer token (e.g. a Docker/Kubernetes secret).",
        examples=["/run/secrets/http_token"],
    )
    page_size: int = Field(100, ge=1, description="Ticks per page when a request gives no `limit`.")
    max_page_size: int = Field(1000, ge=1, le=100_000, description="Largest `limit` a tick request may ask.")
    max_bars: int = Field(
        10_000,
        ge=1,
        description="Most OHLC bars one request may return: more is refused (400) with a hint to narrow "
        "the range or use a larger interval.",
    )
    mongo_timeout_ms: int = Field(
        5_000,
        ge=100,
        description="How long a request waits for a reachable MongoDB before it is answered 503.",
    )
    status_timeout_s: float = Field(
        5.0, gt=0, description="`/api/status`: how long to wait for Kafka and MongoDB before answering 503."
    )
    live_poll_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often a live event stream (`/api/events/{symbol}`) checks for newly stored ticks "
        "(an estimated count per collection, then an index lookup when it changed).",
    )
    access_log: bool = Field(False, description="Log one line per request (method, path, status).")

    _unset_empty = field_validator("token", "token_file", mode="before")(_empty_is_unset)

    @model_validator(mode="after")
    def _check(self) -> HttpConfig:
        from_file = _read_secret_file(self.token_file, "token_file")
        if from_file is not None:
            if self.token is not None:
                raise ValueError("set only one of token and token_file")
            self.token = from_file
        if self.token is not None and not self.token.get_secret_value():
            raise ValueError("token is empty")
        if self.page_size > self.max_page_size:
            raise ValueError(f"page_size {self.page_size} exceeds max_page_size {self.max_page_size}")
        return self


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
    topics: dict[str, TopicOptions] = Field(
        default_factory=dict,
        description="Per-topic options, keyed by exact topic name (JSON from the environment, or "
        "`PIPELINE_TOPICS__<TOPIC>__<KEY>`). Topics not listed use the defaults below.",
        examples=[
            {
                "petr4": {
                    "write_model": "insert_and_latest",
                    "timeseries": {"granularity": "seconds", "expire_after_s": 2_592_000},
                },
                "vale3": {"filter": {"field": "volume", "op": "gte", "value": 100}},
            }
        ],
    )
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)

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

    @model_validator(mode="after")
    def _check_tick_mappings(self) -> Settings:
        """A topic's `fields` entries, merged with `tick.fields`, must still be one valid mapping."""
        for name, options in self.topics.items():
            if options.fields:
                try:
                    check_field_mapping({**(self.tick.fields or {}), **options.fields})
                except ValueError as exc:
                    raise ValueError(f"topics.{name}.fields (with tick.fields): {exc}") from None
        return self

    def collection_router(self) -> CollectionRouter:
        """The topic -> collection mapping these settings define."""
        return CollectionRouter(self.mongo.database, self.mongo.collection_template, self.mongo.collections)

    def topic_options(self, topic: str) -> TopicOptions:
        return self.topics.get(topic) or _DEFAULT_TOPIC_OPTIONS

    def tick_schema(self, topic: str | None = None) -> TickSchema:
        """The tick schema of a topic: `tick`, with the topic's own `fields` entries and `ts_format`."""
        tick = self.tick
        options = self.topics.get(topic) if topic is not None else None
        fields, ts_format = tick.fields, tick.ts_format
        if options is not None:
            if options.fields:
                fields = {**(fields or {}), **options.fields}
            if options.ts_format is not None:
                ts_format = options.ts_format
        return TickSchema(
            symbol_pattern=tick.symbol_pattern,
            min_price=tick.min_price,
            max_price=tick.max_price,
            max_volume=tick.max_volume,
            fields=fields,
            ts_format=ts_format,
            price_type=tick.price_type,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence, highest first: init arguments, environment variables, the YAML file, defaults.
        return (init_settings, env_settings, YamlSource(settings_cls))


_DEFAULT_TOPIC_OPTIONS = TopicOptions()
