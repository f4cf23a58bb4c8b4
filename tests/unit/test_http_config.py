"""The `http` section of the configuration (`pipeline serve`): defaults, the token from the environment or a
file (never from the YAML file, never shown), and the checks between keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.ops.config import ConfigError, load_settings, redacted_dump


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def errors(path: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return info.value.lines


def test_defaults_bind_localhost_without_a_token() -> None:
    http = load_settings(None).http
    assert (http.host, http.port, http.token, http.page_size, http.max_page_size) == (
        "127.0.0.1",
        8080,
        None,
        100,
        1000,
    )


def test_the_token_comes_from_the_environment_or_a_file_and_is_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PIPELINE_HTTP__TOKEN", "from-env-7c1")
    settings = load_settings(None)
    assert settings.http.token is not None and settings.http.token.get_secret_value() == "from-env-7c1"
    assert "from-env-7c1" not in repr(settings) and "from-env-7c1" not in str(redacted_dump(settings))
    monkeypatch.setenv("PIPELINE_HTTP__TOKEN", "")  # as compose passes an unset ${TICKPIPE_HTTP_TOKEN:-}
    assert load_settings(None).http.token is None
    monkeypatch.delenv("PIPELINE_HTTP__TOKEN")
    secret = tmp_path / "token"
    secret.write_text("from-file-2d9\n")
    monkeypatch.setenv("PIPELINE_HTTP__TOKEN_FILE", str(secret))
    token = load_settings(None).http.token
    assert token is not None and token.get_secret_value() == "from-file-2d9"
    monkeypatch.setenv("PIPELINE_HTTP__TOKEN", "both")
    assert errors() == [
        "config error: http: set only one of token and token_file [file key http or env PIPELINE_HTTP]"
    ]


def test_a_token_in_the_yaml_file_is_refused_naming_where_it_belongs(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text("http:\n  token: in-the-file\n")
    (line,) = errors(path)
    assert line == (
        f"config error: http.token: a secret is not accepted in the config file {path}; "
        "set PIPELINE_HTTP__TOKEN or http.token_file"
    )
    assert "in-the-file" not in line


def test_bad_values_are_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_HTTP__PAGE_SIZE", "2000")
    assert errors() == [
        "config error: http: page_size 2000 exceeds max_page_size 1000 [file key http or env PIPELINE_HTTP]"
    ]
    monkeypatch.delenv("PIPELINE_HTTP__PAGE_SIZE")
    monkeypatch.setenv("PIPELINE_HTTP__PORT", "70000")
    (line,) = errors()
    assert line.startswith("config error: http.port") and "PIPELINE_HTTP__PORT" in line
