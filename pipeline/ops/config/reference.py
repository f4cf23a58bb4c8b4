"""The configuration reference, generated from the model: docs/configuration.md (`pipeline config reference`)
and the commented example config/pipeline.yaml (`pipeline config reference --format yaml`).

Keys, types, constraints, defaults, examples and descriptions all come from the pydantic model in
`pipeline.ops.config.model` (`Field(description=..., examples=...)`), never restated here. Tests regenerate
both files and compare them with the checked-in ones, and check that every key has a description, so
neither can drift from the code.
"""

from __future__ import annotations

import json
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from pipeline.ops.config.model import Secret, Settings
from pipeline.ops.config.schema import (
    env_var_for,
    is_model,
    marker,
    section_of,
    strip_annotated,
    unwrap_optional,
)

# Placeholder for the user-chosen key of a map of sections (`topics.<topic>.format`).
MAP_KEY = "<topic>"
WIDTH = 110


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


def _is_filter(annotation: Any) -> bool:
    """FilterSpec: a discriminated union of models, documented as one key."""
    annotation = strip_annotated(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return all(is_model(strip_annotated(a)) for a in get_args(annotation))
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
    annotation = strip_annotated(annotation)
    inner, nullable = unwrap_optional(annotation)
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
        value = strip_annotated(value)
        return "map of sections" if is_model(value) else f"map of {type_name(value)}"
    if _is_filter(annotation):
        return "filter"
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(annotation))
    if is_model(annotation):
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


def _default_value(field: FieldInfo) -> Any:
    value = field.get_default(call_default_factory=True)
    return value.get_secret_value() if isinstance(value, SecretStr) else value  # a default is never a secret


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = _default_value(field)
    if isinstance(value, BaseModel):
        return ""
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


def secret_rule(loc: tuple[str, ...], field: FieldInfo) -> str:
    """The sentence that says where a secret key may come from ('' for other keys)."""
    secret = marker(field, Secret)
    if secret is None:
        return ""
    sources = f"`{env_var_for(loc)}`"
    if secret.file_key:
        sources += f" or `{'.'.join((*loc[:-1], secret.file_key))}`"
    if secret.unless_plain:
        return (
            f"With credentials it is a secret: set it in {sources}; only a URI without a password may be in "
            "the file."
        )
    return f"Secret: set it in {sources}; refused in the config file."


def description(loc: tuple[str, ...], field: FieldInfo) -> str:
    return " ".join(part for part in (field.description or "", secret_rule(loc, field)) if part)


def _walk(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[KeyDoc]:
    for name, field in model.model_fields.items():
        loc = (*prefix, field.alias or name)
        section, is_map = section_of(field)
        if section is None:
            yield _doc(loc, field)
            continue
        if is_map or unwrap_optional(strip_annotated(field.annotation))[1]:
            yield _doc(loc, field)  # a map of sections, or an optional section: a key of its own
        yield from _walk(section, (*loc, MAP_KEY) if is_map else loc)


def _doc(loc: tuple[str, ...], field: FieldInfo) -> KeyDoc:
    kind = ", ".join([type_name(field.annotation), *_constraints(field)])
    return KeyDoc(".".join(loc), env_var_for(loc), kind, _default_text(field), description(loc, field))


def all_keys() -> list[KeyDoc]:
    """Every configuration key of the model, in model order."""
    return list(_walk(Settings, ()))


def missing_descriptions() -> list[str]:
    """Keys whose field has no `description` in the model."""
    return [doc.key for doc in all_keys() if not doc.description]


# ---- docs/configuration.md ---------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Table cell text: pipes escaped (also inside code spans, as GitHub's tables require)."""
    return text.replace("|", "\\|").replace("\n", " ")


HEADER = """\
# Configuration reference

<!-- Generated by `pipeline config reference --output docs/configuration.md` from the configuration model
(pipeline/ops/config/model.py). Do not edit by hand: a test fails when this file differs from the model. -->

Every key can be set in the YAML file (`--config FILE`, else `$PIPELINE_CONFIG`, else `config/pipeline.yaml`
if present; `config/pipeline.yaml` is a commented example of every key, generated from the same model) and
overridden by an environment variable `PIPELINE_<SECTION>__<KEY>` (nested keys joined by `__`,
case-insensitive). Precedence, highest first: environment variables, the YAML file, the defaults below.

From the environment, lists are comma-separated (`PIPELINE_KAFKA__TOPICS=petr4,vale3`) or JSON; maps are
JSON (`PIPELINE_KAFKA__CONSUMER='{"fetch.min.bytes": 1024}'`). Credentials come only from environment
variables or `*_file` keys: a secret in the file (a password, a URI with a password, a password-like entry of
`kafka.consumer`, `kafka.producer` or `mongo.options`) is refused with one line naming where to put it, and
secrets are never logged or shown. Check a configuration with `pipeline config check`; show the effective
values (secrets masked) with `pipeline config show`. Both say which file and which variables they read.
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


# ---- config/pipeline.yaml ----------------------------------------------------------------------------

YAML_HEADER = """\
tickpipe configuration: every key with its default, type and description. Generated from the configuration
model by `pipeline config reference --format yaml --output config/pipeline.yaml` (docs/configuration.md is
the same reference as tables); a test fails when this file differs from the model.

Every key can be overridden by an environment variable PIPELINE_<SECTION>__<KEY> (nested keys joined by
"__"), e.g. PIPELINE_KAFKA__BOOTSTRAP_SERVERS=kafka:9092, PIPELINE_BATCH__MAX_MESSAGES=2000. Lists from the
environment may be comma-separated (PIPELINE_KAFKA__TOPICS=petr4,vale3) or JSON; maps are JSON.
Secrets (passwords, URIs with a password) are refused in this file: set them in environment variables or
*_file keys. Check a file with `pipeline config check -c FILE`; see the effective values with
`pipeline config show`.
"""


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6, sort_keys=False)
    return text.strip().removesuffix("...").strip()


def _comment(text: str, indent: int) -> list[str]:
    pad = " " * indent
    return [f"{pad}# {line}" for line in textwrap.wrap(text, WIDTH - indent - 2, break_on_hyphens=False)]


def _yaml_section(model: type[BaseModel], prefix: tuple[str, ...], indent: int) -> list[str]:
    lines: list[str] = []
    for name, field in model.model_fields.items():
        lines += _yaml_key((*prefix, name), field, indent)
    return lines


def _yaml_key(loc: tuple[str, ...], field: FieldInfo, indent: int) -> list[str]:
    pad, name = " " * indent, loc[-1]
    section, is_map = section_of(field)
    if section is not None and not is_map and not unwrap_optional(strip_annotated(field.annotation))[1]:
        doc = section.__dict__.get("__doc__")
        head = _comment(doc.strip().splitlines()[0], indent) if doc else []
        return [*head, f"{pad}{name}:", *_yaml_section(section, loc, indent + 2)]
    kind = ", ".join([type_name(field.annotation), *_constraints(field)])
    lines = _comment(f"{description(loc, field)} [{kind}]", indent)
    secret = marker(field, Secret)
    if secret is not None and not secret.unless_plain:
        return [*lines, f"{pad}# {name}:"]
    lines.append(f"{pad}{name}: {_yaml_value(_default_value(field))}")
    if section is not None:  # a map of sections, or an optional section: its keys, commented out
        header = f"{MAP_KEY}:" if is_map else f"{name}:"
        body = _yaml_section(section, (*loc, MAP_KEY) if is_map else loc, 2)
        lines += [f"{pad}# {line}".rstrip() for line in [header, *body]]
    for example in field.examples or []:
        if not isinstance(example, dict | list):
            lines.append(f"{pad}# Example: {name}: {_yaml_value(example)}")
            continue
        dumped = yaml.safe_dump(
            {name: example}, default_flow_style=None, sort_keys=False, width=WIDTH - indent
        )
        lines.append(f"{pad}# Example:")
        lines += [f"{pad}#   {line}" for line in dumped.rstrip("\n").splitlines()]
    return lines


def render_yaml() -> str:
    lines = [f"# {line}".rstrip() for line in YAML_HEADER.rstrip("\n").splitlines()]
    for name, field in Settings.model_fields.items():
        lines += ["", *_yaml_key((name,), field, 0)]
    return "\n".join(lines) + "\n"
