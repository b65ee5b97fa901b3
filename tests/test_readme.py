"""The README's Python examples run as written and print what they claim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_an_example_per_method():
    joined = "\n".join(BLOCKS)
    for factory in ("create_self_moa(", "create_moa(", "create_self_moa_seq(", "create_from_spec("):
        assert factory in joined


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.strip(), "each example prints its result"
    assert "answer" in printed or "fake" in printed or "a answer" in printed
