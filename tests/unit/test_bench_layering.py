"""`pipeline bench` reaches the repository-only bench/ package without touching sys.path (issue 12 item 4):
found from the pipeline package's own location, imported by path as the package `bench`, and refused in one
line with exit 2 outside a checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from pipeline.cli import cmd_bench
from pipeline.cli.errors import UsageError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_bench_imported() -> Iterator[None]:
    """Forget every bench module for the test, and put them back after it."""
    saved = {name: mod for name, mod in sys.modules.items() if name == "bench" or name.startswith("bench.")}
    for name in saved:
        del sys.modules[name]
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n == "bench" or n.startswith("bench.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_the_checkout_is_found_from_the_package_location() -> None:
    assert cmd_bench.checkout_root() == REPO


def test_no_checkout_next_to_an_installed_package(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "pipeline"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert cmd_bench.checkout_root(str(package / "__init__.py")) is None
    # A bench/ beside it is not enough: the root must be the tickpipe project.
    (tmp_path / "site-packages" / "bench").mkdir()
    (tmp_path / "site-packages" / "bench" / "__init__.py").write_text("")
    (tmp_path / "site-packages" / "pyproject.toml").write_text('[project]\nname = "other"\n')
    assert cmd_bench.checkout_root(str(package / "__init__.py")) is None


def test_outside_a_checkout_load_bench_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cmd_bench, "checkout_root", lambda package_file=None: None)
    with pytest.raises(UsageError) as caught:
        cmd_bench.load_bench()
    assert caught.value.exit_code == 2
    assert str(caught.value) == cmd_bench.OUTSIDE_CHECKOUT


@pytest.mark.usefixtures("no_bench_imported")
def test_bench_is_imported_by_path_without_changing_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing on sys.path leads to the checkout's root: only load_bench() can find bench/.
    path = [p for p in sys.path if Path(p or os.getcwd()).resolve() != REPO]
    monkeypatch.setattr(sys, "path", path)
    with pytest.raises(ImportError):
        __import__("bench.report")
    sys.modules.pop("bench", None)
    module = cmd_bench.load_bench()
    assert sys.path == path
    assert Path(module.__file__ or "").resolve() == REPO / "bench" / "__init__.py"
    from bench import report  # the submodules come from the same directory

    assert Path(report.__file__ or "").resolve() == REPO / "bench" / "report.py"
    assert cmd_bench.load_bench() is module  # already loaded: the same package


@pytest.mark.usefixtures("no_bench_imported")
def test_another_module_named_bench_is_refused() -> None:
    sys.modules["bench"] = ModuleType("bench")
    with pytest.raises(UsageError, match="another module of that name"):
        cmd_bench.load_bench()


def test_cmd_bench_does_not_touch_sys_path() -> None:
    assert "sys.path" not in (REPO / "pipeline" / "cli" / "cmd_bench.py").read_text().replace(
        "nothing is added to sys.path", ""
    )


def test_pipeline_bench_outside_a_checkout_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """The pipeline package alone, as a wheel would install it (no bench/, no pyproject.toml beside it)."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "pipeline", site / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "PYTHON"))}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "bench", "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: `pipeline bench` runs from a tickpipe source checkout only"), lines
    assert result.stdout == ""
