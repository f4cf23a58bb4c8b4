"""JSON for what the read side returns: exact numbers stay exact."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson


def exact_number(value: Any) -> Any:
    """orjson `default` for a Decimal (a Decimal128 price, or a result computed from them): a number with
    exactly its digits, never a rounded double."""
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
