"""The configuration reference (`pipeline config reference`, docs/configuration.md), generated from the model.

Keys, types, constraints and defaults come from the pydantic model in `pipeline.ops.config` (never restated by
hand); descriptions come from `DESCRIPTIONS` below, keyed by dotted key. A test regenerates the document and
compares it with docs/configuration.md, and checks that every key of the model has a description here, so
the reference cannot drift from the code.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from pipeline.ops.config import ENV_PREFIX, Settings, env_var_for

# Placeholder for the user-chosen key of a map of sections (`topics.<topic>.format`).
MAP_KEY = "<topic>"

DESCRIPTIONS: dict[str, str] = {
    # kafka
    "kafka.bootstrap_servers": "Kafka brokers, comma-separated `host:port` list.",
    "kafka.group_id": "Consumer group: workers with the same group share the partitions.",
    "kafka.client_id": "Client id reported to the brokers (logs, quotas).",
    "kafka.topics": "Topics to consume, or regular expressions starting with `^` (e.g. `^ticks\\..*`). "
    "From the environment: comma-separated or a JSON list.",
    "kafka.auto_offset_reset": "Where a consumer group without committed offsets starts.",
    "kafka.session_timeout_ms": "Group session timeout: a worker silent this long loses its partitions.",
    "kafka.max_poll_interval_ms": "Longest time between two polls before the worker leaves the group.",
    "kafka.security.protocol": "Security protocol to the brokers.",
    "kafka.security.sasl_mechanism": "SASL mechanism (required with the SASL protocols).",
    "kafka.security.sasl_username": "SASL user name.",
    "kafka.security.sasl_password": "SASL password (secret: environment variable only, never logged).",
    "kafka.security.sasl_password_file": "File holding the SASL password (e.g. a Docker/Kubernetes secret).",
    "kafka.security.ssl_ca_location": "CA certificate(s) to verify the brokers (PEM file).",
    "kafka.security.ssl_certificate_location": "Client certificate for mutual TLS (PEM file).",
    "kafka.security.ssl_key_location": "Client private key for mutual TLS (PEM file).",
    "kafka.security.ssl_key_password": "Password of the client private key (secret).",
    "kafka.security.ssl_endpoint_identification": "Verify the broker host name against its certificate.",
    "kafka.consumer": "Raw librdkafka consumer properties, passed through as-is (JSON from the "
    "environment). `enable.auto.commit`, `group.id`, `bootstrap.servers` and `auto.offset.reset` are "
    "managed by tickpipe and rejected here. They override tickpipe's own defaults: "
    "`queued.max.messages.kbytes: 16384` (bounded prefetch) and `fetch.wait.max.ms: 100` (latency on "
    "quiet streams).",
    "kafka.producer": "Raw librdkafka producer properties (dead-letter topic producer and `pipeline "
    "produce`), passed through as-is (JSON from the environment).",
    # mongo
    "mongo.uri": "MongoDB connection string. May carry credentials: secret, always logged with the "
    "password masked. Use a replica set (`replicaSet=...`) for `w: majority`.",
    "mongo.uri_file": "File holding the connection string (replaces `mongo.uri`).",
    "mongo.username": "User name (instead of credentials in the URI).",
    "mongo.password": "Password (secret: environment variable only, never logged).",
    "mongo.password_file": "File holding the password (e.g. a Docker/Kubernetes secret).",
    "mongo.auth_source": "Database that holds the user (MongoDB's `authSource`, usually `admin`).",
    "mongo.tls": "Use TLS to MongoDB (default: as the URI says).",
    "mongo.tls_ca_file": "CA certificate(s) to verify the server (PEM file).",
    "mongo.tls_certificate_key_file": "Client certificate and key for X.509 / mutual TLS (PEM file).",
    "mongo.tls_allow_invalid_certificates": "Skip server certificate verification (testing only).",
    "mongo.database": "Database the ticks are stored in.",
    "mongo.collection_template": "Collection for a topic; `{topic}` is replaced by the topic name.",
    "mongo.collections": "Explicit topic → collection names, taking precedence over the template "
    "(JSON from the environment).",
    "mongo.latest_collection": "Collection of the latest tick per symbol (topics with `write_model` "
    "`insert_and_latest` or `latest`).",
    "mongo.write_concern.w": "Write concern: acknowledged by this many members, or `majority`. Offsets are "
    "committed only after this acknowledgement.",
    "mongo.write_concern.j": "Wait for the journal before acknowledging.",
    "mongo.write_concern.wtimeout_ms": "Give up waiting for the write concern after this long (then "
    "retried; 0 = no limit).",
    "mongo.server_selection_timeout_ms": "How long an operation waits for a suitable server.",
    "mongo.create_indexes": "Create the `{symbol: 1, ts: 1}` index on every tick collection at start-up.",
    "mongo.options": "Extra keyword arguments for `pymongo.MongoClient` (e.g. `compressors`, `appname`, "
    "`maxPoolSize`; JSON from the environment).",
    # batch, retry
    "batch.max_messages": "A batch is written when it holds this many messages...",
    "batch.max_wait_ms": "...or when its first message is this old, whichever comes first.",
    "batch.max_in_flight": "Batches handed to the writer and not yet durable; beyond this, consumption "
    "pauses (bounded memory).",
    "retry.initial_backoff_ms": "First wait after a transient error (exponential backoff with jitter, "
    "retried forever, nothing committed meanwhile).",
    "retry.max_backoff_ms": "Longest wait between two retries.",
    # errors
    "errors.tolerance": "`none`: stop at the first message that can never be stored, committing nothing "
    "past it. `data`: dead-letter such messages and keep going. Transient errors are always retried.",
    "errors.dead_letter.topic": "Kafka dead-letter topic (`{topic}` = the source topic; original bytes, "
    "reason in headers); null disables it.",
    "errors.dead_letter.collection": "MongoDB dead-letter collection in `mongo.database`; null disables it.",
    # tick
    "tick.symbol_pattern": "Regular expression a tick's `symbol` must match.",
    "tick.min_price": "Exclusive lower bound of a tick's `price`.",
    "tick.max_price": "Upper bound of a tick's `price`.",
    "tick.max_volume": "Upper bound of a tick's `volume`.",
    # topics
    "topics": "Per-topic options, keyed by exact topic name (JSON from the environment, or "
    f"`{ENV_PREFIX}TOPICS__<TOPIC>__<KEY>`). Topics not listed use the defaults below.",
    f"topics.{MAP_KEY}.format": "`tick`: validate and store market ticks. `raw`: store any JSON object "
    "as-is.",
    f"topics.{MAP_KEY}.filter": "Declarative filter (`{field, op, value}` conditions combined with `all`, "
    "`any`, `not`): only matching messages are stored; the others are counted and committed.",
    f"topics.{MAP_KEY}.write_model": "`insert`: keep every tick. `insert_and_latest`: also upsert the "
    "latest tick of each symbol into `mongo.latest_collection`. `latest`: keep only the latest tick.",
    f"topics.{MAP_KEY}.timeseries": "Store the topic in a MongoDB time-series collection (timeField `ts`, "
    "metaField `symbol`); null: a regular collection.",
    f"topics.{MAP_KEY}.timeseries.granularity": "Time-series bucketing granularity.",
    f"topics.{MAP_KEY}.timeseries.expire_after_s": "Delete ticks older than this (`expireAfterSeconds`); "
    "null keeps them forever.",
    # worker, log, metrics
    "worker.shutdown_timeout_s": "On SIGTERM/SIGINT: time allowed to flush and commit before exiting.",
    "worker.rebalance_timeout_s": "On a partition revoke: time allowed to flush and commit before the "
    "partitions move (otherwise the work is dropped uncommitted and re-delivered).",
    "worker.startup_timeout_s": "Servers unreachable at start-up: fail (exit 1) after this long.",
    "log.level": "Log level.",
    "log.format": "`json` lines, readable `text`, or `auto` (JSON unless stderr is a terminal).",
    "log.summary_interval_s": "Interval of the progress summary log line (and of the consumer lag gauge).",
    "metrics.enabled": "Serve Prometheus `/metrics`, `/healthz` (liveness) and `/readyz` (readiness).",
    "metrics.host": "Address the metrics server binds (`0.0.0.0` in a container).",
    "metrics.port": "Port of the metrics server; 0 picks a free port (logged at start-up).",
}


@dataclass(frozen=True)
class KeyDoc:
    key: str
    env: str
    type: str
    default: str
    description: str

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(get_args(annotation))
        if nullable and len(args) == 1:
            return args[0], True
        if nullable:
            return Union[tuple(args)], True  # noqa: UP007 (a runtime union of the remaining members)
    return annotation, False


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_filter(annotation: Any) -> bool:
    """FilterSpec: a discriminated union of models, documented as one key."""
    annotation = _strip_annotated(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return all(_is_model(_strip_annotated(a)) for a in get_args(annotation))
    return False


_SCALARS = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    SecretStr: "secret string",
    Path: "path",
}


def type_name(annotation: Any) -> str:
    """A short human name for an annotation: 'integer', '`a` | `b`', 'list of string', ..."""
    annotation = _strip_annotated(annotation)
    inner, nullable = _unwrap_optional(annotation)
    if nullable:
        return f"{type_name(inner)} or null"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(f"`{value}`" for value in get_args(annotation))
    if origin is list:
        return f"list of {type_name(get_args(annotation)[0])}"
    if origin is dict:
        _, value = get_args(annotation)
        value = _strip_annotated(value)
        return "map of sections" if _is_model(value) else f"map of {type_name(value)}"
    if _is_filter(annotation):
        return "filter"
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(annotation))
    if _is_model(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(field: FieldInfo) -> list[str]:
    parts = []
    for meta in field.metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, attr, None)
            if isinstance(meta, annotated_types.BaseMetadata) and value is not None:
                parts.append(f"{symbol} {value:,}" if isinstance(value, int) else f"{symbol} {value}")
        min_length = getattr(meta, "min_length", None)
        if isinstance(meta, annotated_types.MinLen) and min_length:
            parts.append(f"at least {min_length} item" + ("s" if min_length > 1 else ""))
    return parts


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()  # a default is never a real secret
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | dict):
        text = json.dumps(value)
    elif isinstance(value, float) and value >= 1e6:
        text = f"{value:.0e}".replace("e+", "e")
    else:
        text = str(value)
    return f"`{text}`"


def _walk(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[KeyDoc]:
    for name, field in model.model_fields.items():
        loc = (*prefix, field.alias or name)
        annotation, nullable = _unwrap_optional(_strip_annotated(field.annotation))
        annotation = _strip_annotated(annotation)
        if _is_model(annotation):
            if nullable:
                yield _doc(loc, field)
            yield from _walk(annotation, loc)
        elif get_origin(annotation) is dict and _is_model(_strip_annotated(get_args(annotation)[1])):
            yield _doc(loc, field)
            yield from _walk(_strip_annotated(get_args(annotation)[1]), (*loc, MAP_KEY))
        else:
            yield _doc(loc, field)


def _doc(loc: tuple[str, ...], field: FieldInfo) -> KeyDoc:
    key = ".".join(loc)
    kind = ", ".join([type_name(field.annotation), *_constraints(field)])
    description = DESCRIPTIONS.get(key) or field.description or ""
    return KeyDoc(key, env_var_for(loc), kind, _default_text(field), description)


def all_keys() -> list[KeyDoc]:
    """Every configuration key of the model, in model order."""
    return list(_walk(Settings, ()))


def missing_descriptions() -> list[str]:
    return [doc.key for doc in all_keys() if doc.key not in DESCRIPTIONS]


def stale_descriptions() -> list[str]:
    known = {doc.key for doc in all_keys()}
    return sorted(key for key in DESCRIPTIONS if key not in known)


def _cell(text: str) -> str:
    """Table cell text: pipes escaped (also inside code spans, as GitHub's tables require)."""
    return text.replace("|", "\\|").replace("\n", " ")


HEADER = """\
# Configuration reference

<!-- Generated by `pipeline config reference --output docs/configuration.md` from pipeline/ops/config.py and
pipeline/ops/configref.py. Do not edit by hand: a test fails when this file differs from the model. -->

Every key can be set in the YAML file (`--config FILE`, else `$PIPELINE_CONFIG`, else `config/pipeline.yaml`
if present; `config/pipeline.yaml` is a commented example) and overridden by an environment variable
`PIPELINE_<SECTION>__<KEY>` (nested keys joined by `__`, case-insensitive). Precedence, highest first:
environment variables, the YAML file, the defaults below.

From the environment, lists are comma-separated (`PIPELINE_KAFKA__TOPICS=petr4,vale3`) or JSON; maps are
JSON (`PIPELINE_KAFKA__CONSUMER='{"fetch.min.bytes": 1024}'`). Secrets (passwords, URIs with credentials)
belong in environment variables or `*_file` keys, never in the file; they are never logged or shown.
Check a configuration with `pipeline config check`; show the effective values (secrets masked) with
`pipeline config show`.
"""


def render_markdown() -> str:
    lines = [HEADER.rstrip("\n")]
    section = None
    for doc in all_keys():
        if doc.section != section:
            section = doc.section
            lines += [
                "",
                f"## `{section}`",
                "",
                "| Key | Environment variable | Type | Default | Description |",
                "| --- | --- | --- | --- | --- |",
            ]
        cells = [f"`{doc.key}`", f"`{doc.env}`", doc.type, doc.default, doc.description]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"
