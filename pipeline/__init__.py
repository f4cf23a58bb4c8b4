"""tickpipe: a Kafka-to-MongoDB persistence pipeline for market ticks.

Each message is stored once, keyed by its Kafka coordinates (topic, partition, offset), and its offset is
committed only after the write is durable (w=majority, j=true by default).
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # `from pipeline import query` (the documented Python API) without importing the query code eagerly.
    if name == "query":
        from pipeline.read import query

        return query
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
