"""Unit tests for pipeline.core.filters: validation of filter specs and the compiled predicates."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from pipeline.core.filters import AllOf, AnyOf, Condition, FilterSpec, NotOf, Predicate, compile_filter

ADAPTER: TypeAdapter[FilterSpec] = TypeAdapter(FilterSpec)

TICK = {
    "symbol": "PETR4",
    "price": 36.5,
    "volume": 1200,
    "flag": True,
    "book": {"bid": 36.4, "depth": {"n": 3}},
}


def parse(spec: dict[str, Any]) -> FilterSpec:
    return ADAPTER.validate_python(spec)


def compiled(spec: dict[str, Any]) -> Predicate:
    return compile_filter(parse(spec))


def cond(field: str, op: str, value: Any = None) -> Predicate:
    return compiled({"field": field, "op": op, "value": value})


def validation_messages(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        parse(spec)
    return "\n".join(error["msg"] for error in info.value.errors())


# --- parsing ------------------------------------------------------------------------------------------------


def test_specs_parse_into_the_right_node_types() -> None:
    spec = parse(
        {
            "all": [
                {"field": "price", "op": "gt", "value": 30},
                {"any": [{"field": "symbol", "op": "matches", "value": "^PETR"}]},
                {"not": {"field": "volume", "op": "lt", "value": 10}},
            ]
        }
    )
    assert isinstance(spec, AllOf)
    first, second, third = spec.all
    assert isinstance(first, Condition) and (first.field, first.op, first.value) == ("price", "gt", 30)
    assert isinstance(second, AnyOf)
    assert isinstance(third, NotOf) and isinstance(third.not_, Condition)


# --- comparison ops -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", 36.5, True),
        ("eq", 36, False),
        ("ne", 36, True),
        ("ne", 36.5, False),
        ("gt", 36, True),
        ("gt", 36.5, False),
        ("gte", 36.5, True),
        ("gte", 37, False),
        ("lt", 37, True),
        ("lt", 36.5, False),
        ("lte", 36.5, True),
        ("lte", 36.4, False),
    ],
)
def test_numeric_comparisons(op: str, value: float, expected: bool) -> None:
    assert cond("price", op, value)(TICK) is expected


def test_int_and_float_compare_as_numbers() -> None:
    assert cond("volume", "gte", 1200.0)(TICK)
    assert cond("volume", "eq", 1200.0)(TICK)
    assert cond("price", "lt", 100)(TICK)


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("gt", "PETR3", True),
        ("gt", "PETR4", False),
        ("gte", "PETR4", True),
        ("lt", "VALE3", True),
        ("lte", "A", False),
    ],
)
def test_string_comparisons_are_lexicographic(op: str, value: str, expected: bool) -> None:
    assert cond("symbol", op, value)(TICK) is expected


def test_in_and_not_in() -> None:
    assert cond("symbol", "in", ["PETR4", "VALE3"])(TICK)
    assert not cond("symbol", "in", ["VALE3"])(TICK)
    assert not cond("symbol", "in", [])(TICK)
    assert cond("symbol", "not_in", ["VALE3"])(TICK)
    assert not cond("symbol", "not_in", ["PETR4"])(TICK)
    assert cond("symbol", "not_in", [])(TICK)


def test_matches_uses_search_semantics() -> None:
    assert cond("symbol", "matches", "^PETR")(TICK)
    assert cond("symbol", "matches", "TR4")(TICK)  # search, not fullmatch
    assert not cond("symbol", "matches", "^VALE")(TICK)
    assert not cond("symbol", "matches", "^petr")(TICK)
    assert cond("symbol", "matches", "(?i)^petr")(TICK)


def test_matches_only_applies_to_strings() -> None:
    assert not cond("price", "matches", "36")(TICK)
    assert not cond("book", "matches", ".*")(TICK)
    assert not cond("missing", "matches", ".*")(TICK)


def test_exists() -> None:
    assert cond("price", "exists", True)(TICK)
    assert not cond("price", "exists", False)(TICK)
    assert cond("nope", "exists", False)(TICK)
    assert not cond("nope", "exists", True)(TICK)
    assert cond("n", "exists", True)({"n": None})  # present with a null value still exists


def test_eq_null_matches_only_an_explicit_null() -> None:
    assert cond("n", "eq", None)({"n": None})
    assert not cond("n", "eq", None)({})


# --- missing fields -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("eq", 1),
        ("ne", 1),
        ("gt", 1),
        ("gte", 1),
        ("lt", 1),
        ("lte", 1),
        ("in", [1]),
        ("not_in", [1]),
        ("matches", ".*"),
        ("gt", "a"),
    ],
)
def test_missing_fields_never_match_comparison_ops(op: str, value: Any) -> None:
    predicate = cond("absent", op, value)
    assert predicate({"other": 1}) is False
    assert predicate({}) is False
    assert cond("book.absent", op, value)(TICK) is False


# --- type mismatches ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "op", "value"),
    [
        ("symbol", "gt", 1),
        ("symbol", "lt", 1),
        ("price", "gt", "1"),
        ("price", "lte", "zzz"),
        ("flag", "gt", 0),
        ("flag", "gte", 1),
        ("flag", "lte", 1),
        ("book", "gt", 1),
        ("book", "lt", "z"),
        ("price", "eq", "36.5"),
        ("volume", "in", ["1200"]),
    ],
)
def test_type_mismatches_do_not_match_and_do_not_raise(field: str, op: str, value: Any) -> None:
    assert cond(field, op, value)(TICK) is False


def test_null_field_does_not_match_ordering_ops() -> None:
    assert not cond("n", "gt", 0)({"n": None})
    assert not cond("n", "lt", 0)({"n": None})


def test_ne_and_not_in_match_on_type_mismatch() -> None:
    # A present value of another type is "not equal" / "not in".
    assert cond("price", "ne", "36.5")(TICK)
    assert cond("volume", "not_in", ["1200"])(TICK)


@pytest.mark.parametrize(
    ("op", "value", "doc"),
    [
        ("eq", 1, {"x": True}),
        ("eq", 0, {"x": False}),
        ("eq", True, {"x": 1}),
        ("in", [1, 2], {"x": True}),
        ("in", [0], {"x": False}),
    ],
)
def test_eq_and_in_do_not_confuse_booleans_and_numbers(op: str, value: Any, doc: dict[str, Any]) -> None:
    assert cond("x", op, value)(doc) is False


# --- dotted paths -------------------------------------------------------------------------------------------


def test_dotted_paths_reach_nested_fields() -> None:
    assert cond("book.bid", "lt", 36.5)(TICK)
    assert cond("book.depth.n", "eq", 3)(TICK)
    assert cond("book.depth", "exists", True)(TICK)
    assert cond("book.depth.m", "exists", False)(TICK)


def test_dotted_path_through_a_non_mapping_is_missing() -> None:
    assert not cond("price.x", "exists", True)(TICK)
    assert not cond("a.b", "eq", 1)({"a": [{"b": 1}]})
    assert not cond("a.b", "eq", 1)({"a": "b"})


def test_dotted_path_does_not_match_a_literal_dotted_key() -> None:
    assert not cond("a.b", "eq", 1)({"a.b": 1})
    assert cond("a.b", "eq", 1)({"a": {"b": 1}})


# --- combinations -------------------------------------------------------------------------------------------


def test_all_any_not_nesting() -> None:
    predicate = compiled(
        {
            "all": [
                {"field": "price", "op": "gt", "value": 30},
                {
                    "any": [
                        {"field": "symbol", "op": "matches", "value": "^PETR"},
                        {"field": "volume", "op": "gte", "value": 1000},
                    ]
                },
                {"not": {"field": "halted", "op": "eq", "value": True}},
            ]
        }
    )
    assert predicate(TICK)
    assert predicate({"symbol": "VALE3", "price": 61.0, "volume": 5000})
    assert not predicate({"symbol": "VALE3", "price": 61.0, "volume": 10})
    assert not predicate({"symbol": "PETR4", "price": 20.0, "volume": 5000})
    assert not predicate({**TICK, "halted": True})


def test_not_of_a_missing_field_condition_matches() -> None:
    assert compiled({"not": {"field": "absent", "op": "gt", "value": 1}})(TICK)


def test_single_element_all_and_any() -> None:
    assert compiled({"all": [{"field": "price", "op": "gt", "value": 1}]})(TICK)
    assert not compiled({"any": [{"field": "price", "op": "lt", "value": 1}]})(TICK)


def test_double_negation() -> None:
    spec = {"not": {"not": {"field": "price", "op": "gt", "value": 1}}}
    assert compiled(spec)(TICK)
    assert not compiled(spec)({"price": 0})


# --- validation errors --------------------------------------------------------------------------------------


def test_bad_regex_is_rejected_at_validation() -> None:
    messages = validation_messages({"field": "symbol", "op": "matches", "value": "(unclosed"})
    assert "invalid regular expression '(unclosed'" in messages


def test_matches_needs_a_string() -> None:
    assert "op 'matches' needs a regular expression string" in validation_messages(
        {"field": "symbol", "op": "matches", "value": 5}
    )


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, None, True])
def test_ordering_ops_need_a_number_or_string(op: str, value: Any) -> None:
    assert f"op {op!r} needs a number or a string value" in validation_messages(
        {"field": "price", "op": op, "value": value}
    )


@pytest.mark.parametrize("op", ["in", "not_in"])
@pytest.mark.parametrize("value", ["PETR4", 1, None, {"a": 1}])
def test_in_and_not_in_need_a_list(op: str, value: Any) -> None:
    assert f"op {op!r} needs a list value" in validation_messages(
        {"field": "symbol", "op": op, "value": value}
    )


@pytest.mark.parametrize("value", [None, 1, "yes"])
def test_exists_needs_a_boolean(value: Any) -> None:
    assert "op 'exists' needs true or false" in validation_messages(
        {"field": "x", "op": "exists", "value": value}
    )


def test_unknown_op_is_rejected() -> None:
    messages = validation_messages({"field": "price", "op": "between", "value": [1, 2]})
    assert "Input should be 'eq', 'ne', 'gt'" in messages


@pytest.mark.parametrize(
    "spec",
    [
        {"field": "price", "op": "gt", "value": 1, "extra": 2},
        {"all": [{"field": "price", "op": "gt", "value": 1}], "field": "x"},
        {"not": {"field": "price", "op": "gt", "value": 1}, "any": []},
        {"none": [{"field": "price", "op": "gt", "value": 1}]},
    ],
)
def test_extra_or_unknown_keys_are_rejected(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse(spec)


@pytest.mark.parametrize("spec", [{"all": []}, {"any": []}, {"field": "", "op": "eq", "value": 1}, {}])
def test_empty_specs_are_rejected(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse(spec)


def test_nested_invalid_condition_is_rejected() -> None:
    messages = validation_messages({"all": [{"any": [{"field": "s", "op": "matches", "value": "["}]}]})
    assert "invalid regular expression '['" in messages


def test_exact_decimal_prices_compare_exactly_with_numbers() -> None:
    """tick.price_type decimal128 gives Decimal prices: ordering filters compare them exactly."""
    from decimal import Decimal

    keep = compiled({"field": "price", "op": "gte", "value": 10})
    assert keep({"price": Decimal("10.00")}) and keep({"price": Decimal("10.01")})
    assert not keep({"price": Decimal("9.999999999999999999")})
    exact = compiled({"field": "price", "op": "lt", "value": 0.1})
    assert exact({"price": Decimal("0.1")})  # 0.1 as a double is 0.1000000000000000055...: exact comparison
