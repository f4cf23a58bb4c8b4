"""tickpipe: a Kafka-to-MongoDB persistence pipeline for market ticks.

Each message is stored once, keyed by its Kafka coordinates (topic, partition, offset), and its offset is
committed only after the write is durable (w=majority, j=true by default).
"""

__version__ = "0.1.0"
