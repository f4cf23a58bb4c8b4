"""How a collection is written (pure): decided once per collection from the options of its topic(s)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimeSeries:
    """A MongoDB time-series collection: timeField `ts`, metaField `symbol`."""

    granularity: str = "seconds"
    expire_after_s: int | None = None  # MongoDB's expireAfterSeconds; None keeps ticks forever


@dataclass(frozen=True, slots=True)
class CollectionPlan:
    name: str
    history: bool = True  # insert every document (idempotent by _id)
    latest: bool = False  # upsert the latest tick of each symbol into the latest collection
    timeseries: TimeSeries | None = None

    @property
    def deduplicate(self) -> bool:
        # Time-series collections do not enforce a unique _id: re-delivered ticks are filtered out by
        # reading which of the batch's coordinates are already stored, before inserting.
        return self.timeseries is not None
