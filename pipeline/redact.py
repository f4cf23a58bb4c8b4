"""Masking of credentials before anything reaches a log line, an error message or a metric label."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*)(?::[^@/]*)?@", re.IGNORECASE)
_SECRET_PARAM = re.compile(r"(?P<key>[?&;][^=&;]*(?:password|secret|token)[^=&;]*=)[^&;]*", re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """mongodb://user:pw@host/?tlsCertificateKeyFilePassword=x -> mongodb://user:***@host/?...=***"""
    uri = _USERINFO.sub(
        lambda m: f"{m['scheme']}{m['user']}:***@" if m["user"] else f"{m['scheme']}***@", uri
    )
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}***", uri)


def redact_text(text: str, secrets: list[str]) -> str:
    """Remove known secret values and URI passwords from free text (e.g. a driver's error message)."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return re.sub(r"([a-z][a-z0-9+.-]*://)([^:@/\s]*):[^@/\s]*@", r"\1\2:***@", text, flags=re.IGNORECASE)
