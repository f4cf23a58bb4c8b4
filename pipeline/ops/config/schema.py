"""Walking the configuration model: section models, optional and annotated types, field markers, and the
environment variable of a key. Used by loading (error lines), the secret rules and the reference."""

from __future__ import annotations

import types
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pipeline.ops.config.sources import ENV_PREFIX

M = TypeVar("M")


def env_var_for(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def marker(field: FieldInfo, kind: type[M]) -> M | None:
    return next((m for m in field.metadata if isinstance(m, kind)), None)


def strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without None, whether None was allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(get_args(annotation))
        if nullable and len(args) == 1:
            return args[0], True
        if nullable:
            return Union[tuple(args)], True  # noqa: UP007 (a runtime union of the remaining members)
    return annotation, False


def is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def section_of(field: FieldInfo) -> tuple[type[BaseModel] | None, bool]:
    """(the section model a field holds, whether it is a map of such sections keyed by the user)."""
    annotation, _ = unwrap_optional(strip_annotated(field.annotation))
    annotation = strip_annotated(annotation)
    if is_model(annotation):
        return annotation, False
    if get_origin(annotation) is dict:
        value = strip_annotated(get_args(annotation)[1])
        if is_model(value):
            return value, True
    return None, False


def model_at(loc: tuple[str | int, ...], model: type[BaseModel]) -> type[BaseModel] | None:
    """The section model at a location of the configuration (None when the location is not a section)."""
    current: type[BaseModel] | None = model
    parts = list(loc)
    while parts and current is not None:
        field = current.model_fields.get(str(parts.pop(0)))
        if field is None:
            return None
        current, is_map = section_of(field)
        if is_map:
            if not parts:
                return None
            parts.pop(0)  # the user's key (a topic name)
    return current
