"""Run ensemble methods on the items of a task, caching each finished (item, config).

Every configuration runs on the same items, item by item, so an interrupted run still
compares the methods on equal ground. Finished results are appended as JSON lines to
`<out>/runs.jsonl` with their proposals; a rerun reads them and skips what is done.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

from selfmoa.graphs import create_from_spec
from selfmoa.nodes import create_model
from selfmoa.evals.tasks import Item, Task

METHODS = ("single", "self-moa", "moa", "seq")
RUNS_FILE = "runs.jsonl"


@dataclass(frozen=True)
class Config:
    """One configuration to evaluate: a method with its proposer mix and aggregator."""

    name: str
    method: str
    proposers: tuple[tuple[str, int], ...]
    """(model name, samples) per proposer group; one (model, 1) for `single`."""
    aggregator: str | None = None
    mode: str = "oneshot"
    window: int = 4
    reserved: int = 2
    mix: str = ""
    """The proposer mix in the paper's notation, e.g. AAABBB."""

    @property
    def samples(self) -> int:
        return sum(n for _, n in self.proposers)

    def computation(self, settings: dict[str, Any]) -> dict[str, Any]:
        """What determines the results; equal computations share one cached record."""
        mode = self.mode
        if mode == "window" and self.samples <= self.window:
            mode = "oneshot"  # a window that holds every sample is one-shot aggregation
        comp = {"method": "single" if self.method == "single" else "ensemble", "proposers": list(self.proposers),
                "aggregator": self.aggregator, "mode": mode, **settings}
        if mode == "window":
            comp.update(window=self.window, reserved=self.reserved)
        return comp

    def key(self, settings: dict[str, Any]) -> str:
        blob = json.dumps(self.computation(settings), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def mix_label(counts: Sequence[int]) -> str:
    """Paper notation for a proposer mix: counts (3, 3) -> 'AAABBB'."""
    return "".join(chr(ord("A") + i) * n for i, n in enumerate(counts))


def build_configs(
    methods: Sequence[str], models: Sequence[str], *, samples: int, sweep: Sequence[int] = (),
    window: int = 4, reserved: int = 2,
) -> list[Config]:
    """The configurations of an eval, in report order.

    `single` is the first model, greedy; `self-moa` and `seq` sample the first model;
    `moa` mixes the models (for A, B: AAAAAA, AAABBB, BBBBBB, all aggregated by A).

    Example:
        >>> [c.name for c in build_configs(["single", "moa"], ["a", "b"], samples=6)]
        ['single', 'moa AAAAAA', 'moa AAABBB', 'moa BBBBBB']
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if not models:
        raise ValueError("give at least one model with --models")
    if samples < 1 or any(k < 1 for k in sweep):
        raise ValueError("--samples and --samples-sweep need positive numbers")
    a = models[0]
    mix_a = mix_label([samples])
    configs: list[Config] = []
    for method in methods:
        if method == "single":
            configs.append(Config("single", "single", ((a, 1),)))
        elif method in ("self-moa", "seq"):
            mode = "window" if method == "seq" else "oneshot"
            for k in sorted({*sweep, samples}):
                name = method if k == samples else f"{method} k={k}"
                configs.append(Config(name, method, ((a, k),), a, mode, window, reserved, mix_label([k])))
        elif method == "moa":
            if len(models) < 2:
                raise ValueError("moa needs at least two models in --models (the first is the aggregator)")
            mixes: list[list[int]] = [[samples] + [0] * (len(models) - 1)]
            share = [samples // len(models) + (i < samples % len(models)) for i in range(len(models))]
            mixes.append(share)
            for i in range(1, len(models)):
                mixes.append([samples if j == i else 0 for j in range(len(models))])
            for counts in mixes:
                proposers = tuple((m, n) for m, n in zip(models, counts) if n)
                label = mix_label(counts)
                configs.append(Config(f"moa {label}", "moa", proposers, a, "oneshot", window, reserved, label))
    if mix_a and "self-moa" in methods and "moa" in methods:
        # moa AAAAAA is Self-MoA: computed once, reported once (as self-moa).
        configs = [c for c in configs if c.name != f"moa {mix_a}"]
    return configs


@dataclass
class EvalSettings:
    task: str
    methods: list[str]
    models: list[str]
    limit: int | None = None
    samples: int = 6
    sweep: list[int] = field(default_factory=list)
    temperature: float = 0.7
    max_tokens: int | None = None
    seed: int = 0
    window: int = 4
    reserved: int = 2
    threads: int | None = None


def _make_model(name: str, max_tokens: int, slots: int, threads: int | None) -> Any:
    kwargs: dict[str, Any] = {"max_tokens": max_tokens}
    if name == "local" or name.startswith("local:"):
        kwargs["slots"] = slots
        if threads:
            kwargs["threads"] = threads
    return create_model(name, **kwargs)


def load_records(out: Path) -> dict[tuple[str, str, str], dict]:
    """Finished records by (task, item, computation key); later lines win."""
    records: dict[tuple[str, str, str], dict] = {}
    path = out / RUNS_FILE
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill: that unit is simply run again
        records[(rec["task"], rec["item"], rec["key"])] = rec
    return records


def _usage(raw: dict | None) -> dict[str, int]:
    raw = raw or {}
    return {k: int(raw.get(k, 0) or 0) for k in ("input_tokens", "output_tokens", "calls")}


def run_unit(task: Task, item: Item, config: Config, models: dict[str, Any], s: EvalSettings) -> dict:
    """Run one configuration on one item; returns its record (not yet written)."""
    started = time.perf_counter()
    error = None
    proposals: list[dict] = []
    aggregations = 0
    if config.method == "single":
        model = models[config.proposers[0][0]]
        try:
            message = model.invoke([HumanMessage(item.prompt)], temperature=0)
            answer = message.text if hasattr(message, "text") else str(message.content)
            usage = _usage({**(message.usage_metadata or {}), "calls": 1})
        except Exception as exc:  # recorded, and retried by the next run
            answer, usage, error = "", _usage(None), f"{type(exc).__name__}: {exc}"
    else:
        spec = {
            "layers": [[{"model": models[m], "samples": n} for m, n in config.proposers]],
            "aggregator": {"model": models[config.aggregator], "mode": config.mode,
                           "window": config.window, "reserved": config.reserved},
            "temperature": s.temperature,
            "seed": s.seed,
        }
        try:
            result = create_from_spec(spec).compile().invoke({"messages": [("user", item.prompt)]})
            answer = result["answer"]
            usage = _usage(result["usage"]["total"])
            aggregations = len(result.get("aggregations") or [])
            for p in result["proposals"]:
                ok = None if p["error"] else bool(task.score(item, p["text"]))
                proposals.append({"model": p["model"], "sample": p["sample"], "text": p["text"],
                                  "correct": ok, "error": p["error"]})
        except Exception as exc:
            answer, usage, error = "", _usage(None), f"{type(exc).__name__}: {exc}"
    return {
        "task": s.task, "item": item.id, "config": config.name, "key": config.key(_settings_key(s, task)),
        "answer": answer, "correct": bool(task.score(item, answer)) if not error else False,
        "proposals": proposals, "aggregations": aggregations, "usage": usage,
        "wall_s": round(time.perf_counter() - started, 3), "error": error,
    }


def _settings_key(s: EvalSettings, task: Task) -> dict[str, Any]:
    return {"temperature": s.temperature, "max_tokens": s.max_tokens or task.max_tokens, "seed": s.seed}


def run_eval(
    s: EvalSettings,
    out: Path,
    *,
    task: Task | None = None,
    progress: bool = True,
    make_model: Callable[[str, int, int, int | None], Any] = _make_model,
) -> dict[str, list[dict]]:
    """Run (or resume) an eval; returns the records of every config, by config name."""
    from selfmoa.evals.tasks import get_task

    task = task or get_task(s.task)
    out.mkdir(parents=True, exist_ok=True)
    items = task.load(s.limit)
    configs = build_configs(s.methods, s.models, samples=s.samples, sweep=s.sweep,
                            window=s.window, reserved=s.reserved)
    skey = _settings_key(s, task)
    done = load_records(out)
    slots = max([c.samples for c in configs] + [1])
    models: dict[str, Any] = {}
    todo = [(item, c) for item in items for c in configs
            if not _finished(done.get((s.task, item.id, c.key(skey))))]
    # Each unit computed once even if two config names share it (e.g. seq with k <= window).
    seen: set[tuple[str, str]] = set()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=s.task, unit="run", file=sys.stderr, dynamic_ncols=True)
    path = out / RUNS_FILE
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        with path.open("a", encoding="utf-8") as sink:
            sink.write("\n")  # end a line cut by a kill, so the next record starts on its own line
    with path.open("a", encoding="utf-8") as sink:
        for item, config in todo:
            key = config.key(skey)
            if bar:
                bar.set_postfix_str(f"item {item.id} {config.name}", refresh=False)
            if (item.id, key) not in seen:
                for name, _ in config.proposers:
                    if name not in models:
                        models[name] = make_model(name, s.max_tokens or task.max_tokens, slots, s.threads)
                rec = run_unit(task, item, config, models, s)
                sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
                sink.flush()
                done[(s.task, item.id, key)] = rec
                seen.add((item.id, key))
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    by_config: dict[str, list[dict]] = {}
    for c in configs:
        recs = [done.get((s.task, item.id, c.key(skey))) for item in items]
        by_config[c.name] = [{**r, "config": c.name} for r in recs if r is not None]
    return by_config


def _finished(rec: dict | None) -> bool:
    return rec is not None and not rec.get("error")


__all__ = ["METHODS", "Config", "EvalSettings", "build_configs", "load_records", "mix_label", "run_eval", "run_unit"]
