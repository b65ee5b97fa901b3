"""Print the size of each layer against its budget: code lines, longest functions, repeats, module lines.

Budgets (issue 22): the graph core (graphs/, nodes/, prompts/) at most 1,400 code lines once
agreement and adaptive sampling are in (1,250 before them); the call runtime (selfmoa/runtime/)
at most 550; no function in either over 40 code lines; no module under selfmoa/ over 500 lines.
Code lines exclude blank lines, comments and docstrings. Run: python .ci/core_size.py
(exit status 1 when a budget is exceeded; tests/test_lint.py runs it).
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ("graphs", "nodes", "prompts")
RUNTIME = ("selfmoa/runtime",)
BUDGETS = {CORE: 1400, RUNTIME: 550}
FUNCTION_BUDGET = 40
MODULE_BUDGET = 500


def code_lines(path: Path) -> set[int]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
        # attribute docstrings: a bare string right after an assignment
        if isinstance(node, (ast.Module, ast.ClassDef)):
            for stmt in node.body[1:]:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                    docstrings.update(range(stmt.lineno, stmt.end_lineno + 1))
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                        tokenize.ENCODING, tokenize.ENDMARKER):
            continue
        for line in range(tok.start[0], tok.end[0] + 1):
            if line not in docstrings:
                lines.add(line)
    return lines


def functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    code = code_lines(path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            size = len([n for n in range(node.lineno, node.end_lineno + 1) if n in code])
            out.append((size, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return out


def repeats(paths: list[Path], width: int = 6) -> list[str]:
    """Runs of `width` identical stripped code lines found in more than one place."""
    seen: Counter[tuple[str, ...]] = Counter()
    where: dict[tuple[str, ...], str] = {}
    for path in paths:
        code = sorted(code_lines(path))
        text = path.read_text(encoding="utf-8").splitlines()
        stripped = [text[n - 1].strip() for n in code]
        for i in range(len(stripped) - width + 1):
            block = tuple(stripped[i : i + width])
            if sum(len(x) for x in block) < 120:
                continue  # short lines (brackets, returns) repeat by nature
            seen[block] += 1
            where.setdefault(block, f"{path.relative_to(ROOT)}:{code[i]}")
    return [where[b] for b, n in seen.items() if n > 1]


def layer(folders: tuple[str, ...], budget: int) -> bool:
    """Print one layer's size; True when it is within its budgets."""
    paths = sorted(p for d in folders for p in (ROOT / d).rglob("*.py"))
    total = sum(len(code_lines(p)) for p in paths)
    longest = sorted((f for p in paths for f in functions(p)), reverse=True)
    dup = repeats(paths)
    print(f"{', '.join(d + '/' for d in folders)}: {total} code lines (budget {budget:,})")
    print("  longest functions: " + "; ".join(f"{name} {size}" for size, name in longest[:5]))
    print(f"  repeated blocks of 6+ lines: {len(dup)}" + (f" ({', '.join(dup[:5])})" if dup else ""))
    return total <= budget and (not longest or longest[0][0] <= FUNCTION_BUDGET)


def main() -> int:
    ok = all([layer(folders, budget) for folders, budget in BUDGETS.items()])
    modules = sorted((len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(ROOT)))
                     for p in (ROOT / "selfmoa").rglob("*.py"))
    print(f"largest modules under selfmoa/ (budget {MODULE_BUDGET} lines): "
          + "; ".join(f"{name} {n}" for n, name in modules[-3:][::-1]))
    return 0 if ok and modules[-1][0] <= MODULE_BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
