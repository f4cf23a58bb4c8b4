"""Test-server plumbing: prerequisites, the fallback rule (and CI refusing it), the build cache."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pipeline.dev import apache_kafka, cache, ferretdb
from tests import conftest


def _fake_java(directory: Path, version_line: str) -> Path:
    java = directory / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return java


@pytest.mark.parametrize(
    "line, major",
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_402"', 8),
    ],
)
def test_java_major_version_is_parsed(tmp_path: Path, line: str, major: int) -> None:
    assert apache_kafka.java_major(str(_fake_java(tmp_path, line))) == major


def test_missing_or_old_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = apache_kafka.missing_prerequisite()
    assert reason is not None and "Java 17+" in reason
    _fake_java(tmp_path, 'java version "1.8.0_402"')
    reason = apache_kafka.missing_prerequisite()
    assert reason is not None and "Java 8" in reason


def test_maven_is_needed_only_until_the_jars_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # a Java 17, no mvn
    monkeypatch.setenv("TICKPIPE_CACHE_DIR", str(tmp_path / "cache"))
    _fake_java(tmp_path, 'openjdk version "17.0.15" 2025-04-15')
    reason = apache_kafka.missing_prerequisite()
    assert reason is not None and "Maven" in reason
    entry = tmp_path / "cache" / apache_kafka.CACHE_NAME
    entry.mkdir(parents=True)
    (entry / cache.STAMP).write_text(cache.fingerprint(apache_kafka.POM))
    assert apache_kafka.missing_prerequisite() is None


def test_ferretdb_needs_go_only_until_it_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(ferretdb, "go_command", lambda: None)
    reason = ferretdb.missing_prerequisite()
    assert reason is not None and "Go" in reason


def test_without_java_the_suite_falls_back_to_tansu_but_ci_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apache_kafka, "missing_prerequisite", lambda: "Java 17+ is not installed")
    monkeypatch.setattr(ferretdb, "missing_prerequisite", lambda: None)
    for name in ("TICKPIPE_TEST_BROKER", "TICKPIPE_TEST_MONGO", "TICKPIPE_TEST_MONGO_SERVERS", "CI"):
        monkeypatch.delenv(name, raising=False)
    chosen = conftest._select()
    assert chosen.broker == "tansu" and chosen.broker_fallback == "Java 17+ is not installed"
    assert len(chosen.notes) == 1 and "falling back to the Tansu broker" in chosen.notes[0]
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.exit.Exception, match="not falling back to Tansu"):
        conftest._select()


def test_without_go_ci_refuses_to_test_the_write_path_on_one_server_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(apache_kafka, "missing_prerequisite", lambda: None)
    monkeypatch.setattr(ferretdb, "missing_prerequisite", lambda: "Go is not installed")
    for name in ("TICKPIPE_TEST_BROKER", "TICKPIPE_TEST_MONGO", "TICKPIPE_TEST_MONGO_SERVERS", "CI"):
        monkeypatch.delenv(name, raising=False)
    assert conftest._select().mongo_kinds == ["secantus"]
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.exit.Exception, match="FerretDB"):
        conftest._select()


def test_the_cache_builds_an_entry_once_under_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKPIPE_CACHE_DIR", str(tmp_path))
    builds: list[int] = []

    def build(target: Path) -> None:
        builds.append(1)
        time.sleep(0.3)
        (target / "artifact").write_text("done")

    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.ensure_entry("thing", "v1", build)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and {r for r in results} == {tmp_path / "thing"}
    assert (tmp_path / "thing" / "artifact").read_text() == "done"
    # A new recipe replaces the entry; a failed build leaves the previous one and no temporary directory.
    cache.ensure_entry("thing", "v2", build)
    assert len(builds) == 2 and cache.is_complete(tmp_path / "thing", "v2")

    def broken(target: Path) -> None:
        (target / "half").write_text("x")
        raise RuntimeError("network down")

    with pytest.raises(RuntimeError):
        cache.ensure_entry("thing", "v3", broken)
    assert cache.is_complete(tmp_path / "thing", "v2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing", "thing.lock"]
