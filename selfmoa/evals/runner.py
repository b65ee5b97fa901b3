"""Sample once, aggregate many ways: the eval runner.

For each item, every model the configurations need is sampled once (sample i with seed
`seed + i`, at the eval's temperature) and once greedily; the draws are cached in
`<out>/draws.jsonl`. Every aggregation (synthesize, select, vote; one-shot or through a
sliding window; any k up to the draw) then runs the real selfmoa graph on those same
samples, replayed by `ReplayChatModel`, with the real model as aggregator. Comparisons
between configurations are therefore paired: the same items and the same samples, so
an extra aggregation costs no extra samples, and a smaller k is the first k of the draw.

Finished aggregations are appended to `<out>/runs.jsonl`; a rerun reads both files and
does only what is missing, item by item, so an interrupted run still compares every
configuration on the same items. The configurations are made in `selfmoa.evals.configs`,
the two files read and written by `selfmoa.evals.cache`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

from selfmoa.evals.cache import DRAWS_FILE, RUNS_FILE, Sink, load_draws, load_records, usage_counts
from selfmoa.evals.configs import AGGREGATIONS, Config, build_configs
from selfmoa.evals.replay import ReplayChatModel
from selfmoa.evals.tasks import Item, Task
from selfmoa.graphs.hybrid import create_from_spec
from selfmoa.graphs.self_moa import create_self_moa
from selfmoa.runtime.errors import describe_error
from selfmoa.runtime.models import model_client


@dataclass
class EvalSettings:
    """What an eval runs: the task, methods, models and their sampling settings (see `selfmoa eval --help`)."""

    task: str
    methods: list[str]
    models: list[str]
    limit: int | None = None
    skip: int = 0
    """Leave out the first `skip` of the first `limit` items (those settings were chosen on)."""
    samples: int = 6
    sweep: list[int] = field(default_factory=list)
    temperature: float = 0.7
    max_tokens: int | None = None
    seed: int = 0
    window: int = 4
    reserved: int = 2
    threads: int | None = None
    aggregations: list[str] = field(default_factory=lambda: list(AGGREGATIONS))
    patience: int | None = None
    orders: list[str] = field(default_factory=lambda: ["given"])
    """How `select` shows the candidates, one configuration each (given, shuffled, both)."""
    adaptive: list[tuple[int, int, bool]] = field(default_factory=list)
    """Adaptive-sampling rules (batch, margin, anchor) to replay on the drawn samples, with vote."""
    workers: int = 4
    """Aggregations of one item run at once (the embedded model decodes them as one batch)."""
    shard: tuple[int, int] | None = None
    """(i, n): run only items i, i+n, i+2n, … of the first `limit`, so that n processes (or
    machines) can share one eval; they may share `out`, as each record is one append."""


def _make_model(name: str, max_tokens: int, slots: int, threads: int | None) -> Any:
    return model_client(name, max_tokens=max_tokens, slots=slots, threads=threads)


def draw(task: Task, item: Item, model: Any, *, count: int, start: int, temperature: float, seed: int) -> list[dict]:
    """Samples `start .. count-1` of `model` on `item` (sample i with seed `seed + i`), scored.

    Drawn through a selfmoa graph in vote mode, so they are exactly the proposals a graph
    with that base seed asks for, and no aggregator call is made. Temperature 0 is the
    greedy answer: one plain call.
    """
    if temperature == 0:
        started = time.perf_counter()
        try:
            message = model.invoke([HumanMessage(item.prompt)], temperature=0)
            text, error = message.text, None
            usage = usage_counts({**(message.usage_metadata or {}), "calls": 1})
        except Exception as exc:  # recorded; the next run draws it again
            text, error, usage = "", describe_error(exc), usage_counts(None)
        return [{"text": text, "usage": usage, "error": error, "correct": bool(task.score(item, text)) if not error else None,
                 "latency": round(time.perf_counter() - started, 3)}]
    graph = create_self_moa(model, samples=count - start, temperature=temperature, seed=seed + start,
                            mode="vote", min_proposals=1).compile()
    try:
        result = graph.invoke({"messages": [("user", item.prompt)]})
        proposals = result["proposals"]
    except Exception as exc:  # every sample failed: recorded as failed samples
        proposals = [{"text": "", "usage": None, "error": describe_error(exc), "latency": 0.0}] * (count - start)
    return [{"text": p["text"], "usage": usage_counts(p["usage"]), "error": p["error"], "latency": p["latency"],
             "correct": bool(task.score(item, p["text"])) if not p["error"] else None} for p in proposals]


def aggregate_unit(task: Task, item: Item, config: Config, draws: dict[str, list[dict]], models: dict[str, Any],
                   s: EvalSettings) -> dict:
    """Run one configuration on one item from its drawn samples; returns its record."""
    started = time.perf_counter()
    error, proposals, aggregations, extra = None, [], 0, {}
    if config.method == "single":
        sample = draws["greedy"][0]
        answer, usage, error = sample["text"], sample["usage"], sample["error"]
    else:
        spec = _replay_spec(task, config, draws, models, s)
        try:
            result = create_from_spec(spec).compile().invoke({"messages": [("user", item.prompt)]})
            answer = result["answer"]
            usage = usage_counts(result["usage"]["total"])
            aggregations = len(result.get("aggregations") or [])
            last = (result.get("aggregations") or [{}])[-1]
            extra = {k: last[k] for k in ("chosen", "votes", "order", "picks") if k in last}
            extra.update(agreement=result.get("agreement"), drawn=len(result["proposals"]))
            # Per aggregator call, so the report can count syntheses stopped by max_tokens.
            extra["aggregator_output"] = [a["usage"]["output_tokens"] for a in result.get("aggregations") or []
                                          if a["usage"]["calls"]]
            if "stopped" in result:
                extra["stopped"] = result["stopped"]
            for p in result["proposals"]:
                ok = None if p["error"] else bool(task.score(item, p["text"]))
                proposals.append({"model": p["model"], "sample": p["sample"], "text": p["text"],
                                  "correct": ok, "error": p["error"]})
        except Exception as exc:
            answer, usage, error = "", usage_counts(None), describe_error(exc)
    return {
        "task": s.task, "item": item.id, "config": config.name, "key": config.key(_settings_key(s, task)),
        "answer": answer, "correct": bool(task.score(item, answer)) if not error else False,
        "proposals": proposals, "aggregations": aggregations, "usage": usage, **extra,
        "wall_s": round(time.perf_counter() - started, 3), "error": error,
    }



def _replay_spec(task: Task, config: Config, draws: dict[str, list[dict]], models: dict[str, Any],
                 s: EvalSettings) -> dict[str, Any]:
    """The ensemble spec of `config`: its proposers replay the drawn samples, its aggregator is the real model."""
    # The greedy answer is there for the anchored adaptive rule: its temperature-0 first sample.
    layers = [{"model": ReplayChatModel(model=name, base=s.seed, samples=draws[name], greedy=draws.get("greedy")),
               "samples": n} for name, n in config.proposers]
    aggregator: dict[str, Any] = {"mode": config.aggregate, "order": config.order, "answer_of": getattr(task, "answer_of", None)}
    if config.aggregate != "vote":
        aggregator["model"] = models[config.aggregator or config.proposers[0][0]]
    if config.window is not None and config.samples > config.window:
        aggregator.update(window=config.window, reserved=config.reserved)
        if config.patience is not None:  # "the same answer" as the task reads answers
            aggregator.update(patience=config.patience)
    adaptive = None if config.adaptive is None else dict(zip(("batch", "margin", "anchor"), config.adaptive, strict=True))
    return {"layers": [layers], "aggregator": aggregator, "temperature": s.temperature, "seed": s.seed,
            "adaptive": adaptive}

def _settings_key(s: EvalSettings, task: Task) -> dict[str, Any]:
    return {"temperature": s.temperature, "max_tokens": s.max_tokens or task.max_tokens, "seed": s.seed}


def _needed_draws(configs: list[Config]) -> dict[str, int]:
    """Samples each model must have drawn: the largest seed offset any configuration asks for."""
    need: dict[str, int] = {}
    for c in configs:
        if c.method == "single":
            continue
        offset = 0
        for name, n in c.proposers:
            offset += n
            need[name] = max(need.get(name, 0), offset)
    return need


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
    items = task.load(s.limit)[s.skip:]
    if s.shard:
        items = items[s.shard[0]::s.shard[1]]
    configs = build_configs(s.methods, s.models, samples=s.samples, sweep=s.sweep, window=s.window,
                            reserved=s.reserved, aggregations=s.aggregations, patience=s.patience,
                            orders=s.orders, adaptive=s.adaptive)
    skey = _settings_key(s, task)
    done = load_records(out)
    todo = [item for item in items if _pending(configs, done, s.task, item.id, skey)]
    _run_items(task, todo, configs, skey, s, out, done, make_model=make_model, progress=progress)
    by_config: dict[str, list[dict]] = {}
    for c in configs:
        recs = [done.get((s.task, item.id, c.key(skey))) for item in items]
        by_config[c.name] = [{**r, "config": c.name} for r in recs if r is not None]
    return by_config


def _run_items(task: Task, todo: list[Item], configs: list[Config], skey: dict[str, Any], s: EvalSettings, out: Path,
               done: dict[tuple[str, str, str], dict], *, make_model: Callable[[str, int, int, int | None], Any],
               progress: bool) -> None:
    """Draw and aggregate the items `todo`, appending to the cache in `out` and adding the records to `done`."""
    max_tokens = skey["max_tokens"]
    drawn, need = load_draws(out), _needed_draws(configs)
    slots = max([*need.values(), s.workers, 1])
    models: dict[str, Any] = {}

    def model(name: str) -> Any:
        if name not in models:
            models[name] = make_model(name, max_tokens, slots, s.threads)
        return models[name]

    bar = _progress_bar(len(todo), s.task) if progress else None
    runs, draws_sink = Sink(out / RUNS_FILE), Sink(out / DRAWS_FILE)
    try:
        for item in todo:
            if bar:
                bar.set_postfix_str(f"item {item.id}: drawing", refresh=True)
            samples = _draw_item(task, item, s, need, drawn, model, max_tokens, draws_sink,
                                 greedy="single" in s.methods or any(a[2] for a in s.adaptive))
            pending = _pending(configs, done, s.task, item.id, skey)
            for c in pending:
                if c.aggregator and c.aggregate != "vote":
                    model(c.aggregator)
            if bar:
                bar.set_postfix_str(f"item {item.id}: {len(pending)} aggregations", refresh=True)
            with ThreadPoolExecutor(max_workers=max(1, s.workers)) as pool:
                for rec in pool.map(lambda c, item=item, samples=samples: aggregate_unit(task, item, c, samples, models, s),
                                    pending):
                    runs.write(rec)
                    done[(s.task, item.id, rec["key"])] = rec
            if bar:
                bar.update(1)
    finally:
        runs.close()
        draws_sink.close()
        if bar:
            bar.close()


def _pending(configs: list[Config], done: dict[tuple[str, str, str], dict], task: str, item: str,
             skey: dict[str, Any]) -> list[Config]:
    """The configurations still to run on `item`, one per computation (equal ones share a record)."""
    pending, seen = [], set()
    for c in configs:
        key = c.key(skey)
        if not _finished(done.get((task, item, key))) and key not in seen:
            seen.add(key)
            pending.append(c)
    return pending


def _progress_bar(total: int, desc: str) -> Any:
    """A progress bar of items on stderr."""
    from tqdm import tqdm  # the eval extra's; imported only when progress is shown

    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True)

def _draw_item(task: Task, item: Item, s: EvalSettings, need: dict[str, int], drawn: dict[tuple, dict],
               model: Callable[[str], Any], max_tokens: int, sink: Sink, *, greedy: bool) -> dict[str, list[dict]]:
    """The item's samples per model (and its greedy answer), drawing what the cache lacks."""
    wanted: list[tuple[str, int, float, int | None]] = [(name, count, s.temperature, s.seed) for name, count in need.items()]
    if greedy:
        wanted.append((s.models[0], 1, 0.0, None))
    out: dict[str, list[dict]] = {}
    for name, count, temperature, seed in wanted:
        key = (s.task, item.id, name, temperature, max_tokens, seed)
        previous = (drawn.get(key) or {}).get("samples", [])
        have = [] if any(x.get("error") for x in previous) else previous[:count]  # a failed draw is redrawn
        if len(have) < count:
            have = have + draw(task, item, model(name), count=count, start=len(have),
                               temperature=temperature, seed=seed or 0)
            record = {"task": s.task, "item": item.id, "model": name, "temperature": temperature,
                      "max_tokens": max_tokens, "seed": seed, "samples": have}
            sink.write(record)
            drawn[key] = record
        out["greedy" if temperature == 0 else name] = have
    return out


def _finished(rec: dict | None) -> bool:
    return rec is not None and not rec.get("error")


__all__ = ["EvalSettings", "aggregate_unit", "draw", "run_eval"]
