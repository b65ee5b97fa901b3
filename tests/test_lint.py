"""Lint and types: ruff and mypy over the whole project, as configured in pyproject.toml.

Here rather than as separate CI steps so that the README's one test command runs them too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import missing

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> list[str]:
    if shutil.which(name, path=str(Path(sys.executable).parent)) is None and shutil.which(name) is None:
        missing(f"{name} is not installed; it is in the 'test' extra: pip install -e '.[test]'")
    return [sys.executable, "-m", name]


def test_ruff_finds_nothing():
    out = subprocess.run([*_tool("ruff"), "check", "--output-format", "concise", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]


def test_mypy_finds_no_type_errors(tmp_path):
    # mypy cannot follow setuptools' package-dir mapping (graphs/ is installed as
    # selfmoa.graphs), so it checks a copy laid out as installed: then every import between
    # the packages resolves, instead of degrading to Any.
    layout = {"selfmoa": "selfmoa", "selfmoa/graphs": "graphs", "selfmoa/nodes": "nodes", "selfmoa/prompts": "prompts"}
    for target, source in layout.items():
        shutil.copytree(ROOT / source, tmp_path / target, ignore=shutil.ignore_patterns("__pycache__"),
                        dirs_exist_ok=True)
    out = subprocess.run([*_tool("mypy"), "--config-file", str(ROOT / "pyproject.toml"), "-p", "selfmoa"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "MYPYPATH": str(tmp_path)})
    report = out.stdout
    for target, source in layout.items():
        if target != source:
            report = report.replace(f"{target}/", f"{source}/")
    assert out.returncode == 0, report[-3000:] + out.stderr[-1000:]


def test_layers_keep_their_size_budgets():
    # .ci/core_size.py prints each layer's code lines, longest functions and repeats
    # against its budget (issue 22) and fails when one is exceeded.
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "core_size.py")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "selfmoa/runtime/:" in out.stdout and "budget 550" in out.stdout
