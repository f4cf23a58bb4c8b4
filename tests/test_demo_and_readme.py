"""README's promise: two set-up commands (demo and tests), and CI runs exactly the README's test command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)\n(.*?)```", text, re.S)
    assert block, "README has no shell block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_quickstart_is_the_demo_and_the_test_command_and_ci_runs_the_same() -> None:
    commands = _readme_commands()
    assert commands == ["./scripts/demo", "./scripts/test"], commands
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^exec \./scripts/test$", ci, re.M), "CI must run the README's test command"
    for script in ("scripts/demo", "scripts/test", ".ci/run"):
        assert os.access(REPO / script, os.X_OK), f"{script} is not executable"


def test_every_relative_link_in_the_docs_points_to_a_file() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken


@pytest.mark.servers
def test_pipeline_demo_runs_end_to_end_on_embedded_servers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    chart = tmp_path / "session.png"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--count", "1200", "--chart", str(chart)],
        cwd=REPO,
        env={**env, "COLUMNS": "140"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "stored and committed 1200 ticks" in out
    for symbol in ("PETR4", "VALE3"):
        row = next(line for line in out.splitlines() if symbol in line)
        assert "600" in row, row
        # One trading session of market time: 10:00 to the last tick before 17:00 (600 ticks, 42 s apart).
        assert " 10:00:00 " in row and " 16:59:18 " in row, row
    # The 5-minute bars of the session (84 of them), and the chart's path.
    assert "5m OHLC bars computed by MongoDB (America/Sao_Paulo)" in out
    bars = [line for line in out.splitlines() if re.match(r"^\s+\d\d:\d[05]\s+\d", line)]
    assert len(bars) == 84 and bars[0].split()[0] == "10:00" and bars[-1].split()[0] == "16:55", bars[:2]
    assert f"chart of the session (5m bars): {chart}" in out.replace("\n", "")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Traceback" not in result.stderr
