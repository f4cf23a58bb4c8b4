"""Which configuration values are secrets: they are refused in the YAML file (credentials come only from
environment variables or `*_file` keys) and masked wherever the configuration is shown."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pipeline.ops.config.model import Secret, SecretEntries, Settings
from pipeline.ops.config.schema import env_var_for, marker, section_of
from pipeline.ops.redact import redact_uri

_SECRET_WORDS = ("password", "uri", "secret", "token", "credential", "key.pem", "authmechanismproperties")


def looks_secret(key: str) -> bool:
    """A key whose value may be a credential (e.g. `sasl.password`, `tlsCertificateKeyFilePassword`)."""
    key = key.lower()
    return any(word in key for word in _SECRET_WORDS)


def _walk(
    data: Mapping[str, Any], model: type[BaseModel], prefix: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], FieldInfo, Any]]:
    for name, value in data.items():
        field = model.model_fields.get(str(name))
        if field is None:
            continue  # an unknown key: reported by validation
        loc = (*prefix, str(name))
        yield loc, field, value
        section, is_map = section_of(field)
        if section is None or not isinstance(value, Mapping):
            continue
        if is_map:
            for key, inner in value.items():
                if isinstance(inner, Mapping):
                    yield from _walk(inner, section, (*loc, str(key)))
        else:
            yield from _walk(value, section, loc)


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def file_secret_problems(data: Mapping[str, Any], path: object) -> list[str]:
    """One line per secret found in the YAML file `data` (read from `path`), naming where it belongs."""
    lines = []
    for loc, field, value in _walk(data, Settings, ()):
        key, env = ".".join(loc), env_var_for(loc)
        secret = marker(field, Secret)
        if secret is not None and not _unset(value):
            if secret.unless_plain and isinstance(value, str) and redact_uri(value) == value:
                continue  # no credentials in it
            instead = f"{env} or {'.'.join((*loc[:-1], secret.file_key))}" if secret.file_key else env
            what = "a URI with credentials" if secret.unless_plain else "a secret"
            lines.append(
                f"config error: {key}: {what} is not accepted in the config file {path}; set {instead}"
            )
        elif marker(field, SecretEntries) is not None and isinstance(value, Mapping):
            for entry in value:
                if looks_secret(str(entry)):
                    lines.append(
                        f"config error: {key}: {str(entry)!r} holds a secret and is not accepted in the "
                        f"config file {path}; set it in {env} (JSON, merged with the file's entries)"
                    )
    return lines


def redacted_dump(settings: Settings) -> dict[str, Any]:
    """The effective configuration with every secret masked, for `pipeline config show` and logs."""
    data = settings.model_dump(mode="json")
    data["mongo"]["uri"] = redact_uri(settings.mongo.uri.get_secret_value())
    passthrough = [data["kafka"]["consumer"], data["kafka"]["producer"], data["mongo"]["options"]]
    for options in passthrough:
        for key in list(options):
            if looks_secret(key) or "sasl" in key.lower():
                options[key] = "***"
    return data
