"""Loading the configuration: a YAML file, overridden key by key by PIPELINE_<SECTION>__<KEY> variables.

Precedence, highest first: environment variables, the YAML file, built-in defaults. Everything is validated
at start-up; `load_settings` turns any problem into a `ConfigError` whose lines each name the offending key
(with its environment variable, and the nearest known key when a name is misspelt). Secrets in the file are
refused (see `secret_rules`).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings.exceptions import SettingsError

from pipeline.core.errors import ConfigurationError
from pipeline.core.filters import FILTER_TAGS
from pipeline.ops.config.model import Settings
from pipeline.ops.config.schema import env_var_for, model_at
from pipeline.ops.config.secret_rules import file_secret_problems, looks_secret
from pipeline.ops.config.sources import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, ENV_PREFIX, yaml_data


class ConfigError(ConfigurationError):
    """Invalid configuration. `lines` holds one human-readable problem per line, each naming its key."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _suggestion(loc: tuple[str | int, ...]) -> str:
    """'; did you mean kafka.bootstrap_servers?' for an unknown key close to a known one, else ''."""
    model = model_at(loc[:-1], Settings)
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {'.'.join(str(p) for p in (*loc[:-1], close[0]))}?" if close else ""


def _format_validation_error(exc: ValidationError) -> list[str]:
    lines = []
    seen = set()
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if part != "__root__" and part not in FILTER_TAGS)
        key = ".".join(str(part) for part in loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key" + _suggestion(loc)
        elif error["type"] not in ("missing",) and "input" in error and not looks_secret(key):
            shown = error["input"]
            if isinstance(shown, str | int | float | bool):
                message += f" (got {shown!r})"
        hint = f" [file key {key} or env {env_var_for(loc)}]" if loc else ""
        line = f"config error: {key}: {message}{hint}" if key else f"config error: {message}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return lines


def pipeline_variables() -> list[str]:
    """The PIPELINE_* environment variables that configure keys (names only; PIPELINE_CONFIG excluded)."""
    return sorted(n for n in os.environ if n.upper().startswith(ENV_PREFIX) and n.upper() != CONFIG_PATH_ENV)


def _unknown_env_sections() -> list[str]:
    known = {name.upper() for name in Settings.model_fields}
    lines = []
    for name in pipeline_variables():
        section = name[len(ENV_PREFIX) :].split("__", 1)[0]
        if section.upper() not in known:
            close = difflib.get_close_matches(section.upper(), sorted(known), n=1, cutoff=0.6)
            rest = name[len(ENV_PREFIX) + len(section) :]
            hint = f"; did you mean {ENV_PREFIX}{close[0]}{rest}?" if close else ""
            lines.append(
                f"config error: environment variable {name} does not match any config key "
                f"(sections: {', '.join(sorted(k.lower() for k in known))}){hint}"
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


def describe_sources(explicit: str | Path | None) -> str:
    """Where the configuration comes from, in words: the file (and why that one) and the variables (names
    only, never values). `pipeline config show|check` print it."""
    path = resolve_config_path(explicit)
    if path is None:
        source = f"no config file (no --config, no ${CONFIG_PATH_ENV}, no {DEFAULT_CONFIG_PATH} here)"
    elif explicit:
        source = f"file {path} (--config)"
    elif os.environ.get(CONFIG_PATH_ENV):
        source = f"file {path} (${CONFIG_PATH_ENV})"
    else:
        source = f"file {path} (found in the current directory)"
    names = pipeline_variables()
    variables = f"{len(names)} {ENV_PREFIX}* variable{'s' if len(names) != 1 else ''}"
    return f"{source} + {variables}" + (f" ({', '.join(names)})" if names else "")


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate settings. Raises ConfigError (never a traceback-worthy exception) on any problem."""
    config_path = resolve_config_path(path)
    data = read_yaml(config_path) if config_path is not None else {}
    problems = _unknown_env_sections()
    if config_path is not None:
        problems += file_secret_problems(data, config_path)
    try:
        with yaml_data(data):
            settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(problems + _format_validation_error(exc)) from None
    except SettingsError as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(
            [*problems, f"config error: {exc}{cause} (JSON expected for maps and lists)"]
        ) from None
    if problems:
        raise ConfigError(problems)
    return settings
