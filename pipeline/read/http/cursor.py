"""Opaque page cursors: the position of the last tick of a page in the tick order, and the query it belongs
to (symbol and direction), as URL-safe base64 of a small JSON array.

A cursor is decoded strictly (exact types, bounded sizes) into typed values that are only compared on the
client side and turned into a `ts` bound: nothing in it can reach MongoDB as an operator or a field name.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta

import orjson

from pipeline.read.query import OrderKey, QueryError, Tick, order_key

VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_LENGTH = 512
# Kafka topic names: [a-zA-Z0-9._-], at most 249 characters.
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{0,249}$")
_ORDERS = ("oldest_first", "newest_first")


class InvalidCursor(QueryError):
    """Not a cursor this service issued, or one issued for another symbol or direction."""


def encode(symbol: str, order: str, tick: Tick) -> str:
    ts, partition, offset, topic = order_key(tick)
    millis = (ts - _EPOCH) // timedelta(milliseconds=1)
    raw = orjson.dumps([VERSION, symbol, _ORDERS.index(order), millis, partition, offset, topic])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str, symbol: str, order: str) -> OrderKey:
    """The order key in `text`; InvalidCursor (400) if it is malformed or was issued for another query."""
    bad = InvalidCursor("invalid cursor: pass the next_cursor of a previous page unchanged")
    if not isinstance(text, str) or len(text) > _MAX_LENGTH:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(value, list) or len(value) != 7:
        raise bad
    version, for_symbol, direction, millis, partition, offset, topic = value
    ints = (direction, millis, partition, offset)
    if (
        version != VERSION
        or not isinstance(for_symbol, str)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in ints)
        or not isinstance(topic, str)
        or not _TOPIC.match(topic)
        or direction not in (0, 1)
        or not -(2**62) < millis < 2**62
        or not -(2**31) <= partition < 2**31
        or not -(2**63) <= offset < 2**63
    ):
        raise bad
    if for_symbol != symbol or _ORDERS[direction] != order:
        for_symbol = for_symbol if len(for_symbol) <= 40 else for_symbol[:40] + "..."
        raise InvalidCursor(
            f"invalid cursor: it continues the {_ORDERS[direction].replace('_', ' ')} ticks of "
            f"{for_symbol!r}, not the {order.replace('_', ' ')} ticks of {symbol!r}"
        )
    try:
        ts = _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        raise bad from None
    return (ts, partition, offset, topic)
