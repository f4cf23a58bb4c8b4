"""Ticks out: querying stored ticks (the Python API), export, charts, the live console tail and status."""
