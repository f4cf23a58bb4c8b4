"""docs/configuration.md and config/pipeline.yaml are generated from the configuration model and must never
drift from it; every key is described once, in the model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, TypeAdapter

from pipeline.ops import config
from pipeline.ops.config import KafkaConfig, MongoConfig, Settings, TopicOptions, load_settings
from pipeline.ops.config import reference as configref
from pipeline.ops.config.schema import section_of
from tests import deployment_rules

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"
EXAMPLE = REPO / "config" / "pipeline.yaml"
REGENERATE = "regenerate it: pipeline config reference --output docs/configuration.md"
REGENERATE_YAML = "regenerate it: pipeline config reference --format yaml --output config/pipeline.yaml"


def test_docs_configuration_md_is_up_to_date_with_the_model() -> None:
    assert DOC.read_text() == configref.render_markdown(), f"docs/configuration.md is stale; {REGENERATE}"


def test_config_pipeline_yaml_is_up_to_date_with_the_model() -> None:
    assert EXAMPLE.read_text() == configref.render_yaml(), f"config/pipeline.yaml is stale; {REGENERATE_YAML}"


def test_the_example_file_loads_to_exactly_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.upper().startswith("PIPELINE_")]:
        monkeypatch.delenv(name)
    assert load_settings(EXAMPLE) == Settings()


def _section_blocks() -> dict[str, list[str]]:
    """The lines of config/pipeline.yaml under each top-level section (up to the next one)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in EXAMPLE.read_text().splitlines():
        match = re.match(r"^([a-z_]+):", line)
        if match:
            current = blocks.setdefault(match.group(1), [])
        current.append(line)
    return blocks


def test_the_example_file_shows_every_key_of_the_model() -> None:
    """Every key is in the file under its section: set to its default, or shown commented out (secrets, the
    entries of a map of sections, the keys of an optional section)."""
    blocks = _section_blocks()
    assert list(blocks) == list(Settings.model_fields)
    missing = []
    for doc in configref.all_keys():
        leaf = re.escape(doc.key.rsplit(".", 1)[-1])
        if not any(re.match(rf"^\s*(#\s*)*{leaf}:( |$)", line) for line in blocks[doc.section]):
            missing.append(doc.key)
    assert missing == [], f"config/pipeline.yaml lacks {missing}; {REGENERATE_YAML}"
    assert "mongo.password" in {d.key for d in configref.all_keys()}
    assert re.search(r"^  # password:$", "\n".join(blocks["mongo"]), re.M)  # a secret: commented out


def test_every_key_has_a_description_in_the_model_and_nowhere_else() -> None:
    assert configref.missing_descriptions() == [], (
        "describe the new keys: Field(description=...) in the model"
    )
    assert all(doc.description for doc in configref.all_keys())
    # One place: no table of descriptions beside the model.
    assert not hasattr(configref, "DESCRIPTIONS")


def test_every_example_in_the_model_is_a_valid_value_of_its_key() -> None:
    def check(model: type[BaseModel], prefix: str) -> int:
        count = 0
        for name, field in model.model_fields.items():
            for example in field.examples or []:
                TypeAdapter(field.annotation).validate_python(example)
                count += 1
            section, _ = section_of(field)
            if section is not None:
                count += check(section, f"{prefix}{name}.")
        return count

    assert check(Settings, "") >= 10


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
    assert "  knob: 3" in configref.render_yaml()
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
    as_yaml = subprocess.run(
        [sys.executable, "-m", "pipeline", "config", "reference", "--format", "yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert as_yaml.returncode == 0 and as_yaml.stdout == EXAMPLE.read_text()


def test_the_package_keeps_every_name_importable_from_pipeline_ops_config() -> None:
    for name in (
        "ConfigError",
        "ENV_PREFIX",
        "KafkaConfig",
        "MongoConfig",
        "Settings",
        "TimeSeriesOptions",
        "TopicOptions",
        "env_var_for",
        "load_settings",
        "redacted_dump",
        "resolve_config_path",
    ):
        assert hasattr(config, name), name
