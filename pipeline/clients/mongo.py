"""The MongoDB client both paths use: the URI and TLS/auth settings from configuration, passed through."""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient

from pipeline.ops.config import MongoConfig


def make_client(config: MongoConfig, **extra: Any) -> MongoClient[dict[str, Any]]:
    return MongoClient(config.uri.get_secret_value(), **{**config.client_kwargs(), **extra})
