"""`selfmoa eval`: compare single, Self-MoA, Self-MoA-Seq and mixed MoA on benchmark tasks.

Tasks are plug-ins in `selfmoa.evals.tasks` (one module each); the runner caches every
finished (item, configuration) in `<out>/runs.jsonl`, so a killed eval resumes; the report
writes a Markdown table, a JSON file of all figures and PNG plots. Needs the `eval` extra.

Imports go one way: this package uses the graphs and nodes; they never import it.
"""

from __future__ import annotations

from selfmoa.evals.configs import METHODS, Config, build_configs
from selfmoa.evals.runner import EvalSettings, run_eval
from selfmoa.evals.tasks import TASKS, Item, get_task

__all__ = ["METHODS", "TASKS", "Config", "EvalSettings", "Item", "build_configs", "get_task", "run_eval"]
