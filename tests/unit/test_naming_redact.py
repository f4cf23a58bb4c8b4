"""Unit tests for pipeline.core.naming (MongoDB/Kafka name rules, routing) and pipeline.ops.redact."""

from __future__ import annotations

import pytest

from pipeline.core.naming import (
    MAX_NAMESPACE_BYTES,
    CollectionRouter,
    NameError_,
    check_collection_name,
    check_database_name,
    check_topic_name,
    is_topic_pattern,
)
from pipeline.ops.redact import redact_text, redact_uri

# --- database names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["market", "a", "db_1-x", "d" * 63, "ação"])
def test_valid_database_names(name: str) -> None:
    assert check_database_name(name) == name


def test_empty_database_name() -> None:
    with pytest.raises(NameError_, match=r"^database name is empty$"):
        check_database_name("")


@pytest.mark.parametrize("char", list('/\\. "$*<>:|?\0'))
def test_database_name_forbidden_characters(char: str) -> None:
    with pytest.raises(NameError_) as info:
        check_database_name(f"db{char}x")
    assert "contains forbidden character(s)" in str(info.value)
    assert repr(char) in str(info.value)


def test_database_name_lists_all_forbidden_characters_once() -> None:
    with pytest.raises(NameError_) as info:
        check_database_name("a.b.c$d")
    assert str(info.value).endswith("forbidden character(s) '$.'")


def test_database_name_length_is_measured_in_bytes() -> None:
    with pytest.raises(NameError_, match="64 bytes or longer"):
        check_database_name("d" * 64)
    with pytest.raises(NameError_, match="64 bytes or longer"):
        check_database_name("é" * 32)  # 32 characters, 64 bytes
    assert check_database_name("é" * 31 + "x") == "é" * 31 + "x"  # 63 bytes


def test_name_error_is_a_value_error() -> None:
    assert issubclass(NameError_, ValueError)


# --- collection names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["petr4", "ticks.petr4", "a-b_c", "System.x", "x.system.y", "ação"])
def test_valid_collection_names(name: str) -> None:
    assert check_collection_name(name) == name
    assert check_collection_name(name, "market") == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "collection name is empty"),
        ("a$b", "contains '$' or a NUL character"),
        ("$cmd", "contains '$' or a NUL character"),
        ("a\0b", "contains '$' or a NUL character"),
        ("system.x", "reserved prefix 'system.'"),
        ("system.profile", "reserved prefix 'system.'"),
        (".x", "empty dot-separated part"),
        ("x.", "empty dot-separated part"),
        ("a..b", "empty dot-separated part"),
        (".", "empty dot-separated part"),
    ],
)
def test_invalid_collection_names(name: str, fragment: str) -> None:
    with pytest.raises(NameError_) as info:
        check_collection_name(name)
    assert fragment in str(info.value)


def test_namespace_limit_is_255_bytes_including_database_and_dot() -> None:
    database = "market"
    longest = "c" * (MAX_NAMESPACE_BYTES - len(database) - 1)
    assert check_collection_name(longest, database) == longest
    with pytest.raises(NameError_, match="is longer than 255 bytes"):
        check_collection_name(longest + "c", database)
    with pytest.raises(NameError_, match="is longer than 255 bytes"):
        check_collection_name("é" * 125, database)  # 250 bytes + 7
    # without a database, only the name rules apply
    assert check_collection_name(longest + "c") == longest + "c"


# --- topic names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["petr4", "ticks.petr4", "A-b_c.9", "t" * 249, "...", ".a"])
def test_valid_topic_names(name: str) -> None:
    assert check_topic_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "t" * 250, "a b", "a/b", "a$b", "ação", "a:b", "a\nb", "^ticks"]
)
def test_invalid_topic_names(name: str) -> None:
    with pytest.raises(NameError_) as info:
        check_topic_name(name)
    assert (
        str(info.value)
        == f"topic name {name!r} is not a valid Kafka topic name ([A-Za-z0-9._-], 1-249 chars)"
    )


def test_is_topic_pattern() -> None:
    assert is_topic_pattern("^ticks\\..*")
    assert not is_topic_pattern("ticks")
    assert not is_topic_pattern("")


# --- CollectionRouter ---------------------------------------------------------------------------------------


def test_router_applies_the_template() -> None:
    router = CollectionRouter("market", "ticks_{topic}", {})
    assert router.collection_for("petr4") == "ticks_petr4"
    assert router.collection_for("vale3") == "ticks_vale3"


def test_router_identity_template() -> None:
    assert CollectionRouter("market", "{topic}", {}).collection_for("petr4") == "petr4"


def test_router_overrides_win_over_the_template() -> None:
    overrides = {"petr4": "petrobras"}
    router = CollectionRouter("market", "ticks_{topic}", overrides)
    assert router.collection_for("petr4") == "petrobras"
    assert router.collection_for("vale3") == "ticks_vale3"
    overrides["vale3"] = "changed"  # the router keeps its own copy
    assert router.collection_for("vale3") == "ticks_vale3"


def test_router_returns_the_same_name_on_repeated_calls() -> None:
    router = CollectionRouter("market", "{topic}.ticks", {})
    assert router.collection_for("a") == router.collection_for("a") == "a.ticks"


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("system.x", "reserved prefix 'system.'"),
        ("a$b", "contains '$'"),
        ("", "collection name is empty"),
        ("a..b", "empty dot-separated part"),
        ("x" * 249, "is longer than 255 bytes"),
    ],
)
def test_router_rejects_hostile_topic_names(topic: str, fragment: str) -> None:
    router = CollectionRouter("market", "{topic}", {})
    with pytest.raises(NameError_) as info:
        router.collection_for(topic)
    assert fragment in str(info.value)
    with pytest.raises(NameError_):  # a failure is not cached as a valid name
        router.collection_for(topic)


def test_router_template_prefix_makes_system_topic_safe() -> None:
    assert CollectionRouter("market", "t_{topic}", {}).collection_for("system.x") == "t_system.x"


def test_router_validates_overrides_too() -> None:
    router = CollectionRouter("market", "{topic}", {"petr4": "system.users"})
    with pytest.raises(NameError_, match="reserved prefix"):
        router.collection_for("petr4")


def test_router_namespace_limit_depends_on_database() -> None:
    topic = "x" * 240
    assert CollectionRouter("db", "{topic}", {}).collection_for(topic) == topic
    with pytest.raises(NameError_, match="longer than 255 bytes"):
        CollectionRouter("d" * 20, "{topic}", {}).collection_for(topic)


# --- redact_uri ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("mongodb://app:s3cret@db1:27017/market", "mongodb://app:***@db1:27017/market"),
        (
            "mongodb://app:p:a:ss@db1,db2:27018/?replicaSet=rs0",
            "mongodb://app:***@db1,db2:27018/?replicaSet=rs0",
        ),
        ("mongodb://app:p%40ss@db/", "mongodb://app:***@db/"),
        ("mongodb://:pw@db/", "mongodb://***@db/"),
        (
            "mongodb+srv://app:s3cret@cluster0.example.net/?retryWrites=true",
            "mongodb+srv://app:***@cluster0.example.net/?retryWrites=true",
        ),
        ("MONGODB://app:s3cret@db/", "MONGODB://app:***@db/"),
        (
            "mongodb://db/?tls=true&tlsCertificateKeyFilePassword=kfp&appname=x",
            "mongodb://db/?tls=true&tlsCertificateKeyFilePassword=***&appname=x",
        ),
        (
            "mongodb://db/?tlsCertificateKeyFilePassword=kfp",
            "mongodb://db/?tlsCertificateKeyFilePassword=***",
        ),
        ("mongodb://u:pw@db/?authSecret=a;apiToken=b", "mongodb://u:***@db/?authSecret=***;apiToken=***"),
        (
            "mongodb://127.0.0.1:27017/?directConnection=true",
            "mongodb://127.0.0.1:27017/?directConnection=true",
        ),
        ("mongodb://db1:1,db2:2/market?replicaSet=rs", "mongodb://db1:1,db2:2/market?replicaSet=rs"),
    ],
)
def test_redact_uri(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


def test_redact_uri_without_password_keeps_user_host_and_options() -> None:
    uri = "mongodb://CN=app,O=corp@db/?authMechanism=MONGODB-X509"
    redacted = redact_uri(uri)
    assert redacted.startswith("mongodb://CN=app,O=corp")
    assert redacted.endswith("@db/?authMechanism=MONGODB-X509")


def test_redact_uri_does_not_touch_an_at_sign_after_the_host() -> None:
    uri = "mongodb://db:27017/?appname=a@b"
    assert redact_uri(uri) == uri


def test_redact_uri_masks_aws_session_token() -> None:
    uri = (
        "mongodb://AKIAEXAMPLE:awsSecretKey@db/?authMechanism=MONGODB-AWS"
        "&authMechanismProperties=AWS_SESSION_TOKEN:FQoGZXIvYXdzEXAMPLETOKEN"
    )
    redacted = redact_uri(uri)
    assert "awsSecretKey" not in redacted
    assert "FQoGZXIvYXdzEXAMPLETOKEN" not in redacted


# --- redact_text --------------------------------------------------------------------------------------------


def test_redact_text_removes_known_secrets_everywhere() -> None:
    text = "auth failed for hunter2 (password hunter2 rejected)"
    assert redact_text(text, ["hunter2"]) == "auth failed for *** (password *** rejected)"


def test_redact_text_ignores_empty_and_very_short_secrets() -> None:
    text = "a b ab abc"
    assert redact_text(text, ["", "a", "ab"]) == text
    assert redact_text(text, ["abc"]) == "a b ab ***"


def test_redact_text_masks_uri_passwords_even_when_not_listed() -> None:
    text = "connect mongodb://app:pw-unknown@db1:27017/market failed; retry mongodb+srv://u:x@c.net"
    assert (
        redact_text(text, [])
        == "connect mongodb://app:***@db1:27017/market failed; retry mongodb+srv://u:***@c.net"
    )


def test_redact_text_leaves_uris_without_password_and_plain_text_alone() -> None:
    text = "cannot reach db1:27017 via mongodb://db1:27017/?x=1, contact ops@example.com"
    assert redact_text(text, []) == text


def test_redact_text_masks_whole_uri_secret() -> None:
    uri = "mongodb://app:pw@db/"
    assert redact_text(f"bad uri {uri}!", [uri]) == "bad uri ***!"
