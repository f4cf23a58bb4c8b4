"""A small declarative predicate language for per-topic filters (the seed's filtering consumers).

A filter is a condition `{field, op, value}` or a combination `{all: [...]}`, `{any: [...]}`, `{not: ...}`.
It is validated when the configuration loads and compiled once into plain Python closures: nothing a user
writes is ever passed to eval, and regexes are compiled up front.

    filter:
      all:
        - {field: price, op: gt, value: 30}
        - any:
            - {field: symbol, op: matches, value: "^PETR"}
            - {field: volume, op: gte, value: 1000}
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

Predicate = Callable[[Mapping[str, Any]], bool]
_MISSING = object()

_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Condition(_Node):
    field: str = Field(min_length=1, description="field name; dotted path for nested fields")
    op: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "matches", "exists"]
    value: Any = None

    @model_validator(mode="after")
    def _check(self) -> Condition:
        if self.op in _ORDERING and (
            isinstance(self.value, bool) or not isinstance(self.value, int | float | str)
        ):
            raise ValueError(f"op {self.op!r} needs a number or a string value, got {self.value!r}")
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs a list value")
        if self.op == "matches":
            if not isinstance(self.value, str):
                raise ValueError("op 'matches' needs a regular expression string")
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {self.value!r}: {exc}") from None
        if self.op == "exists" and not isinstance(self.value, bool):
            raise ValueError("op 'exists' needs true or false")
        return self


class AllOf(_Node):
    all: list[FilterSpec] = Field(min_length=1)


class AnyOf(_Node):
    any: list[FilterSpec] = Field(min_length=1)


class NotOf(_Node):
    not_: FilterSpec = Field(alias="not")


def _filter_kind(value: Any) -> str | None:
    """Pick the one shape a filter node has, so that errors are reported for that shape only."""
    if isinstance(value, dict):
        for key, tag in (("all", "AllOf"), ("any", "AnyOf"), ("not", "NotOf")):
            if key in value:
                return tag
        return "Condition"
    if isinstance(value, _Node):
        return type(value).__name__
    return None


# Tags that appear in validation error paths but are not keys of the config file (config.py drops them).
FILTER_TAGS = frozenset({"Condition", "AllOf", "AnyOf", "NotOf"})

FilterSpec = Annotated[
    Annotated[Condition, Tag("Condition")]
    | Annotated[AllOf, Tag("AllOf")]
    | Annotated[AnyOf, Tag("AnyOf")]
    | Annotated[NotOf, Tag("NotOf")],
    Discriminator(
        _filter_kind,
        custom_error_type="filter_shape",
        custom_error_message="a filter is {field, op, value} or {all: [...]}, {any: [...]}, {not: ...}",
    ),
]

for _model in (AllOf, AnyOf, NotOf):
    _model.model_rebuild()


def _getter(path: str) -> Callable[[Mapping[str, Any]], Any]:
    parts = path.split(".")
    if len(parts) == 1:
        key = parts[0]
        return lambda doc: doc.get(key, _MISSING)

    def get(doc: Mapping[str, Any]) -> Any:
        value: Any = doc
        for part in parts:
            if not isinstance(value, Mapping):
                return _MISSING
            value = value.get(part, _MISSING)
        return value

    return get


def _same(a: Any, b: Any) -> bool:
    """Equality as MongoDB sees it: a boolean never equals a number (unlike Python's True == 1)."""
    return isinstance(a, bool) is isinstance(b, bool) and a == b


def _comparable(a: Any, b: Any) -> bool:
    # Decimal: exact prices (tick.price_type decimal128) compare exactly with int, float and Decimal values.
    numbers = (int, float, Decimal)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (isinstance(a, str) and isinstance(b, str))


def compile_filter(spec: FilterSpec) -> Predicate:
    """Compile a validated filter into a predicate over a decoded message (missing fields never match)."""
    if isinstance(spec, AllOf):
        parts = [compile_filter(s) for s in spec.all]
        return lambda doc: all(p(doc) for p in parts)
    if isinstance(spec, AnyOf):
        parts = [compile_filter(s) for s in spec.any]
        return lambda doc: any(p(doc) for p in parts)
    if isinstance(spec, NotOf):
        inner = compile_filter(spec.not_)
        return lambda doc: not inner(doc)
    return _compile_condition(spec)


def _compile_condition(cond: Condition) -> Predicate:
    get = _getter(cond.field)
    want = cond.value
    op = cond.op
    if op == "exists":
        return lambda doc: (get(doc) is not _MISSING) is want
    if op == "eq":
        return lambda doc: _same(get(doc), want)
    if op == "ne":
        return lambda doc: (v := get(doc)) is not _MISSING and not _same(v, want)
    if op == "in":
        return lambda doc: any(_same(get(doc), w) for w in want)
    if op == "not_in":
        return lambda doc: (v := get(doc)) is not _MISSING and not any(_same(v, w) for w in want)
    if op == "matches":
        pattern = re.compile(want)
        return lambda doc: isinstance(v := get(doc), str) and pattern.search(v) is not None
    compare = _ORDERING[op]
    return lambda doc: _comparable(v := get(doc), want) and compare(v, want)
