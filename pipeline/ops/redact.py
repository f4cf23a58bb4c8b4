"""Masking of credentials before anything reaches a log line, an error message or a metric label."""

from __future__ import annotations

import re

_USERINFO = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*)(?P<password>:[^@/]*)?@", re.IGNORECASE
)
# Query options whose value may hold a secret (authMechanismProperties carries e.g. AWS_SESSION_TOKEN:...).
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;][^=&;]*(?:password|secret|token|authmechanismproperties)[^=&;]*=)[^&;]*", re.IGNORECASE
)
_URI_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://)([^:@/\s]*):[^@/\s]*@", re.IGNORECASE)


def _userinfo(m: re.Match[str]) -> str:
    if not m["user"]:
        return f"{m['scheme']}***@"
    return f"{m['scheme']}{m['user']}:***@" if m["password"] else m[0]


def redact_uri(uri: str) -> str:
    """mongodb://user:pw@host/?tlsCertificateKeyFilePassword=x -> mongodb://user:***@host/?...=***"""
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}***", _USERINFO.sub(_userinfo, uri))


def redact_text(text: str, secrets: list[str]) -> str:
    """Remove known secret values and URI passwords from free text (e.g. a driver's error message)."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return _URI_PASSWORD.sub(r"\1\2:***@", text)
