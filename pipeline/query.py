"""Reading stored ticks back (library API; `pipeline query` is its command line).

Every function takes a pymongo `Database` and returns plain dataclasses, so it works the same from the CLI, a
notebook or a test. Aggregations run on the server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.database import Database


@dataclass(frozen=True)
class SymbolStats:
    symbol: str
    collection: str
    count: int
    first_ts: datetime
    last_ts: datetime
    last_price: float
    avg_price: float
    total_volume: int


def symbol_stats(db: Database[dict[str, Any]], collections: Iterable[str]) -> list[SymbolStats]:
    """Per symbol: count, first/last ts, last price, average price, total volume (server-side $group)."""
    pipeline: list[dict[str, Any]] = [
        {"$sort": {"symbol": 1, "ts": 1}},
        {
            "$group": {
                "_id": "$symbol",
                "count": {"$sum": 1},
                "first_ts": {"$first": "$ts"},
                "last_ts": {"$last": "$ts"},
                "last_price": {"$last": "$price"},
                "avg_price": {"$avg": "$price"},
                "total_volume": {"$sum": "$volume"},
            }
        },
        {"$sort": {"_id": 1}},
    ]
    result = []
    for name in collections:
        for row in db[name].aggregate(pipeline):
            result.append(
                SymbolStats(
                    symbol=row["_id"],
                    collection=name,
                    count=int(row["count"]),
                    first_ts=row["first_ts"],
                    last_ts=row["last_ts"],
                    last_price=float(row["last_price"]),
                    avg_price=float(row["avg_price"]),
                    total_volume=int(row["total_volume"]),
                )
            )
    return sorted(result, key=lambda s: (s.symbol, s.collection))
