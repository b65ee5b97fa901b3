"""Evaluation tasks, one module each; `get_task(name)` imports only the one asked for."""

from __future__ import annotations

import importlib

from selfmoa.evals.tasks.base import Item, Task

TASKS = {
    "gsm8k": "selfmoa.evals.tasks.gsm8k",
    "hellaswag": "selfmoa.evals.tasks.hellaswag",
    "humaneval": "selfmoa.evals.tasks.humaneval",
    "rg-basic-arithmetic": "selfmoa.evals.tasks.reasoning_gym_task",
    "rg-arithmetic": "selfmoa.evals.tasks.reasoning_gym_task:EASY",
}


def get_task(name: str) -> Task:
    """The task called `name`; a ValueError lists the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    module, _, attr = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), attr or "TASK")


__all__ = ["TASKS", "Item", "Task", "get_task"]
