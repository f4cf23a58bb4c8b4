"""Where settings come from besides the environment: the YAML file's data, handed to pydantic-settings as a
source of lower precedence than the environment (see `loading.load_settings`)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

ENV_PREFIX = "PIPELINE_"
CONFIG_PATH_ENV = "PIPELINE_CONFIG"
DEFAULT_CONFIG_PATH = Path("config/pipeline.yaml")

_yaml_data: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("_yaml_data", default=None)


@contextlib.contextmanager
def yaml_data(data: dict[str, Any]) -> Iterator[None]:
    """Settings built inside this block read `data` as the YAML file."""
    token = _yaml_data.set(data)
    try:
        yield
    finally:
        _yaml_data.reset(token)


class YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.data = _yaml_data.get() or {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)
