"""The command line without servers: --version, a description for every command, `config show|check` naming
what they read, `--from -1h` without '=', and exit codes decided by the error classes."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"pipeline (tickpipe) {version}\n"


def _parsers(
    parser: argparse.ArgumentParser, path: str = "pipeline"
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _parsers(child, f"{path} {name}")
    return found


def test_every_command_has_a_help_line_and_a_description() -> None:
    parsers = _parsers(build_parser())
    assert len(parsers) >= 20
    for path, parser in parsers:
        assert parser.description, f"`{path} --help` has no description"
    for _, parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{parser.prog} {choice.dest}: no help line in the command list"


def test_config_check_and_show_name_the_file_and_the_variables(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, "config", "check")
    assert code == 0
    assert out == (
        "configuration OK: no config file (no --config, no $PIPELINE_CONFIG, no config/pipeline.yaml here) "
        "+ 0 PIPELINE_* variables\n"
    )
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "pipeline.yaml").write_text("batch: {max_messages: 7}\n")
    monkeypatch.setenv("PIPELINE_MONGO__URI", "mongodb://app:s3cret-pw@db/")
    code, out, _ = run(capsys, "config", "check")
    assert out == (
        "configuration OK: file config/pipeline.yaml (found in the current directory) "
        "+ 1 PIPELINE_* variable (PIPELINE_MONGO__URI)\n"
    )
    other = tmp_path / "other.yaml"
    other.write_text("batch: {max_messages: 9}\n")
    monkeypatch.setenv("PIPELINE_CONFIG", str(other))
    code, out, _ = run(capsys, "config", "show")
    first, rest = out.split("\n", 1)
    assert first == f"# file {other} ($PIPELINE_CONFIG) + 1 PIPELINE_* variable (PIPELINE_MONGO__URI)"
    assert "max_messages: 9" in rest and "s3cret-pw" not in out
    code, out, _ = run(capsys, "config", "show", "--config", str(tmp_path / "config" / "pipeline.yaml"))
    assert out.startswith(f"# file {tmp_path / 'config' / 'pipeline.yaml'} (--config) + ")


def test_config_errors_are_one_line_each_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mongo:\n  password: hunter2\nkafka:\n  bootstrap_server: h:1\n")
    code, out, err = run(capsys, "config", "check", "-c", str(bad))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"config error: mongo.password: a secret is not accepted in the config file {bad}; "
        "set PIPELINE_MONGO__PASSWORD or mongo.password_file",
        "config error: kafka.bootstrap_server: unknown key; did you mean kafka.bootstrap_servers? "
        "[file key kafka.bootstrap_server or env PIPELINE_KAFKA__BOOTSTRAP_SERVER]",
    ]
    assert "hunter2" not in err


def test_the_console_script_prints_version_and_config_errors_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIPELINE_")}
    env["PIPELINE_KAFAK__TOPICS"] = "x"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "did you mean PIPELINE_KAFKA__TOPICS?" in result.stderr


def test_a_relative_time_after_from_or_to_is_its_value() -> None:
    from pipeline.cli import _join_negative_values

    assert _join_negative_values(["query", "ticks", "X", "--from", "-1h", "--to", "-90s"]) == [
        "query",
        "ticks",
        "X",
        "--from=-1h",
        "--to=-90s",
    ]
    assert _join_negative_values(["export", "X", "--from", "-1.5d", "--out", "-"]) == [
        "export",
        "X",
        "--from=-1.5d",
        "--out",
        "-",
    ]
    # Only after --from/--to, only a '-<digit>' token: options and other values are untouched.
    assert _join_negative_values(["--from", "--to", "-x"]) == ["--from", "--to", "-x"]
    assert _join_negative_values(["--limit", "-1"]) == ["--limit", "-1"]
    args = build_parser().parse_args(_join_negative_values(["query", "ticks", "X", "--from", "-2d"]))
    assert args.start == "-2d"


def test_every_bad_input_error_class_carries_exit_code_2() -> None:
    from pipeline.cli.errors import UsageError
    from pipeline.core.errors import ConfigurationError, PipelineError
    from pipeline.ops.config import ConfigError
    from pipeline.read import query
    from pipeline.read.chart import ChartError
    from pipeline.read.export import InvalidFormat
    from pipeline.read.tail import TailError

    bad_input = [
        query.QueryError,
        query.InvalidSymbol,
        query.UnknownSymbol,
        query.InvalidRange,
        query.InvalidInterval,
        query.InvalidTime,
        query.InvalidTimezone,
        InvalidFormat,
        ChartError,
        TailError,
        UsageError,
        ConfigError,
        ConfigurationError,
    ]
    for kind in bad_input:
        assert issubclass(kind, PipelineError) and kind.exit_code == 2, kind
    assert issubclass(query.QueryError, ValueError)  # documented: a ValueError
    assert PipelineError.exit_code == 1


def test_no_command_catches_errors_to_choose_its_own_exit_code() -> None:
    """Exit codes are decided in pipeline/cli/__init__.py from the error's class, nowhere else."""
    for path in sorted((REPO / "pipeline" / "cli").glob("cmd_*.py")):
        if path.name in ("cmd_run.py", "cmd_bench.py"):
            continue  # not on the read side (issue 12: the worker and the benchmark)
        text = path.read_text()
        assert "return fail(" not in text and "fail(str(exc)" not in text, path.name


@pytest.mark.parametrize(
    ("parser", "text", "message"),
    [
        ("non_negative_int", "-3", "-3 must be >= 0"),
        ("positive_int", "0", "0 must be >= 1"),
        ("positive_float", "0", "0 must be > 0"),
        ("positive_int", "x", "'x' is not an integer"),
        ("positive_float", "1e", "'1e' is not a number"),
    ],
)
def test_number_arguments_are_checked_with_one_message(parser: str, text: str, message: str) -> None:
    from pipeline.cli import common

    with pytest.raises(argparse.ArgumentTypeError, match=message):
        getattr(common, parser)(text)
    assert common.positive_int("3") == 3 and common.non_negative_int("0") == 0
    assert common.positive_float("0.5") == 0.5


def test_bad_topic_names_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["topics", "create", "bad$topic"], ["produce", "--topics", "ok,bad topic", "--count", "1"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == ""
        assert len(err.splitlines()) == 1 and "not a valid Kafka topic name" in err, err
