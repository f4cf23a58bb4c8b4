"""Ticks in: the worker that consumes, decodes, batches, writes durably and commits (Kafka -> MongoDB)."""
