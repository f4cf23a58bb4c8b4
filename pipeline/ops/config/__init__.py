"""Configuration: a YAML file in config/, every key overridable by PIPELINE_<SECTION>__<KEY> variables.

- `model`: the sections and their keys (types, defaults, constraints, descriptions): the one definition.
- `sources` / `loading`: the YAML file and the environment, validation, one error line per problem.
- `secret_rules`: which values are secrets (refused in the file, masked when shown).
- `reference`: docs/configuration.md and config/pipeline.yaml, generated from the model.
- `schema`: walking the model (used by the three above).
"""

from pipeline.ops.config.loading import (
    ConfigError,
    describe_sources,
    load_settings,
    pipeline_variables,
    read_yaml,
    resolve_config_path,
)
from pipeline.ops.config.model import (
    BatchConfig,
    DeadLetterConfig,
    ErrorsConfig,
    Granularity,
    KafkaConfig,
    KafkaSecurity,
    LogConfig,
    LogFormat,
    LogLevel,
    MetricsConfig,
    MongoConfig,
    OffsetReset,
    RetryConfig,
    SaslMechanism,
    Scalar,
    Secret,
    SecretEntries,
    SecurityProtocol,
    Settings,
    TickSchemaConfig,
    TimeSeriesOptions,
    Tolerance,
    TopicFormat,
    TopicOptions,
    WorkerConfig,
    WriteConcernConfig,
    WriteModel,
)
from pipeline.ops.config.schema import env_var_for
from pipeline.ops.config.secret_rules import file_secret_problems, looks_secret, redacted_dump
from pipeline.ops.config.sources import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, ENV_PREFIX

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "BatchConfig",
    "ConfigError",
    "DeadLetterConfig",
    "ErrorsConfig",
    "Granularity",
    "KafkaConfig",
    "KafkaSecurity",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "MetricsConfig",
    "MongoConfig",
    "OffsetReset",
    "RetryConfig",
    "SaslMechanism",
    "Scalar",
    "Secret",
    "SecretEntries",
    "SecurityProtocol",
    "Settings",
    "TickSchemaConfig",
    "TimeSeriesOptions",
    "Tolerance",
    "TopicFormat",
    "TopicOptions",
    "WorkerConfig",
    "WriteConcernConfig",
    "WriteModel",
    "describe_sources",
    "env_var_for",
    "file_secret_problems",
    "load_settings",
    "looks_secret",
    "pipeline_variables",
    "read_yaml",
    "redacted_dump",
    "resolve_config_path",
]
