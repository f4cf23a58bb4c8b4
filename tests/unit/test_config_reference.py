"""docs/configuration.md is generated from the configuration model and must never drift from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from pipeline.ops import configref
from pipeline.ops.config import KafkaConfig, MongoConfig, Settings, TopicOptions
from tests import deployment_rules

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"
REGENERATE = "regenerate it: pipeline config reference --output docs/configuration.md"


def test_docs_configuration_md_is_up_to_date_with_the_model() -> None:
    assert DOC.read_text() == configref.render_markdown(), f"docs/configuration.md is stale; {REGENERATE}"


def test_every_key_has_a_description_and_no_description_is_stale() -> None:
    assert configref.missing_descriptions() == [], "describe the new keys in pipeline/ops/configref.py"
    assert configref.stale_descriptions() == [], "remove descriptions of keys that no longer exist"
    assert all(doc.description for doc in configref.all_keys())


def test_every_field_of_the_model_is_documented_under_its_env_variable() -> None:
    docs = {doc.key: doc for doc in configref.all_keys()}
    assert {key.split(".")[0] for key in docs} == set(Settings.model_fields)
    for prefix, model in (("kafka", KafkaConfig), ("mongo", MongoConfig), ("topics.<topic>", TopicOptions)):
        for name in model.model_fields:
            key = f"{prefix}.{name}"
            assert key in docs or any(k.startswith(key + ".") for k in docs), key
    for doc in docs.values():
        assert doc.env == "PIPELINE_" + doc.key.upper().replace(".", "__")
        real = doc.env.replace("<TOPIC>", "PETR4")
        assert deployment_rules.config_key_problem(real, Settings) is None, doc.env


def test_types_constraints_and_defaults_come_from_the_model() -> None:
    rows = {doc.key: doc for doc in configref.all_keys()}
    assert rows["kafka.session_timeout_ms"].type == "integer, >= 1,000, <= 300,000"
    assert rows["kafka.session_timeout_ms"].default == "`10000`"
    assert rows["kafka.topics"].default == '`["petr4", "vale3"]`'
    assert rows["kafka.auto_offset_reset"].type == "`earliest` | `latest`"
    assert rows["mongo.uri"].type == "secret string"
    assert rows["mongo.uri"].default == "`mongodb://127.0.0.1:27017/?directConnection=true`"
    assert (
        rows["mongo.password"].type == "secret string or null" and rows["mongo.password"].default == "`null`"
    )
    assert rows["errors.dead_letter.topic"].default == "`{topic}.dlq`"
    assert rows["topics.<topic>.timeseries.expire_after_s"].env == (
        "PIPELINE_TOPICS__<TOPIC>__TIMESERIES__EXPIRE_AFTER_S"
    )


def test_every_table_row_has_five_cells() -> None:
    for line in DOC.read_text().splitlines():
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]
            assert len(cells) == 5, line


def test_a_new_key_changes_the_reference_and_needs_a_description(monkeypatch: pytest.MonkeyPatch) -> None:
    class Extra(BaseModel):
        knob: int = Field(default=3, ge=1)

    class Bigger(Settings):
        extra: Extra = Field(default_factory=Extra)

    monkeypatch.setattr(configref, "Settings", Bigger)
    assert configref.missing_descriptions() == ["extra.knob"]
    text = configref.render_markdown()
    assert "| `extra.knob` | `PIPELINE_EXTRA__KNOB` | integer, >= 1 | `3` |  |" in text
    assert text != DOC.read_text()


def test_the_cli_prints_and_writes_the_reference(tmp_path: Path) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "pipeline", "config", "reference"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == DOC.read_text()
    target = tmp_path / "configuration.md"
    written = subprocess.run(
        [sys.executable, "-m", "pipeline", "config", "reference", "--output", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert written.returncode == 0 and written.stdout == ""
    assert target.read_text() == DOC.read_text()
