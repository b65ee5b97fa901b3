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
configuration on the same items.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

from selfmoa.evals.replay import ReplayChatModel
from selfmoa.evals.tasks import Item, Task
from selfmoa.graphs import create_from_spec, create_self_moa
from selfmoa.prompts import SELECT_ASK, SELECT_PROMPT
from selfmoa.runtime.errors import describe_error
from selfmoa.runtime.models import model_client

METHODS = ("single", "self-moa", "moa", "seq")
AGGREGATIONS = ("synthesize", "select", "vote")
RUNS_FILE = "runs.jsonl"
DRAWS_FILE = "draws.jsonl"


@dataclass(frozen=True)
class Config:
    """One configuration to evaluate: a method, its proposer mix and how it aggregates."""

    name: str
    method: str
    proposers: tuple[tuple[str, int], ...]
    """(model name, samples) per proposer group; one (model, 1) for `single`."""
    aggregator: str | None = None
    aggregate: str = "synthesize"
    """Aggregation mode: synthesize, select or vote."""
    window: int | None = None
    """Sliding-window size for seq (None: one-shot)."""
    reserved: int = 2
    mix: str = ""
    """The proposer mix in the paper's notation, e.g. AAABBB."""
    patience: int | None = None
    """seq only: stop once the synthesis has kept its answer this many steps."""

    @property
    def samples(self) -> int:
        """Samples in all: k."""
        return sum(n for _, n in self.proposers)

    def computation(self, settings: dict[str, Any]) -> dict[str, Any]:
        """What determines the results; equal computations share one cached record."""
        if self.method == "single":
            return {"method": "single", "proposers": list(self.proposers), **settings}
        window = self.window if self.window is not None and self.samples > self.window else None
        comp = {"method": "ensemble", "proposers": list(self.proposers), "mode": self.aggregate,
                "aggregator": None if self.aggregate == "vote" else self.aggregator, **settings}
        if self.aggregate == "select":  # its prompts changed once; records made with others are not reused
            comp["select_prompts"] = hashlib.sha256((SELECT_PROMPT + SELECT_ASK).encode()).hexdigest()[:8]
        if window is not None:  # a window that holds every sample is one-shot aggregation
            comp.update(window=window, reserved=self.reserved)
            if self.patience is not None:
                comp.update(patience=self.patience, settled_by="task answer")
        return comp

    def key(self, settings: dict[str, Any]) -> str:
        """A short hash of `computation`, the cache key of a record."""
        blob = json.dumps(self.computation(settings), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def mix_label(counts: Sequence[int]) -> str:
    """Paper notation for a proposer mix: counts (3, 3) -> 'AAABBB'."""
    return "".join(chr(ord("A") + i) * n for i, n in enumerate(counts))


def build_configs(
    methods: Sequence[str], models: Sequence[str], *, samples: int, sweep: Sequence[int] = (),
    window: int = 4, reserved: int = 2, aggregations: Sequence[str] = AGGREGATIONS,
    patience: int | None = None,
) -> list[Config]:
    """The configurations of an eval, in report order.

    `single` is the first model, greedy. `self-moa` samples the first model k times and
    aggregates in each mode; `seq` aggregates the same samples through a sliding window
    (synthesize and select; with `patience`, also stopping early); `moa` mixes the models
    (for A, B: AAABBB and BBBBBB, aggregated by A; AAAAAA is self-moa).

    Example:
        >>> [c.name for c in build_configs(["single", "moa"], ["a", "b"], samples=6, aggregations=["vote"])]
        ['single', 'moa AAAAAA vote', 'moa AAABBB vote', 'moa BBBBBB vote']
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    bad = [a for a in aggregations if a not in AGGREGATIONS]
    if bad or not aggregations:
        raise ValueError(f"unknown aggregation {bad[0] if bad else ''!r}; choose from {', '.join(AGGREGATIONS)}")
    if not models:
        raise ValueError("give at least one model with --models")
    if samples < 1 or any(k < 1 for k in sweep):
        raise ValueError("--samples and --samples-sweep need positive numbers")
    # Checked here, not per item: a bad window would otherwise fail every seq run after its draw.
    if "seq" in methods and not 0 < reserved < window:
        raise ValueError(f"--reserved must be smaller than --window (0 < reserved < window), got window={window}, "
                         f"reserved={reserved}; e.g. --window 4 --reserved 2")
    if patience is not None and "seq" not in methods:
        raise ValueError("--patience stops the sliding window of seq early; add seq to --methods or drop --patience")
    a = models[0]
    ks = sorted({*sweep, samples})
    configs: list[Config] = []
    for method in methods:
        if method == "single":
            configs.append(Config("single", "single", ((a, 1),)))
        elif method == "self-moa":
            for k in ks:
                for agg in aggregations:
                    name = f"self-moa k={k} {agg}"
                    configs.append(Config(name, method, ((a, k),), a, agg, None, reserved, mix_label([k])))
        elif method == "seq":
            for k in ks:
                for agg in (x for x in aggregations if x != "vote"):
                    base = Config(f"seq k={k} {agg}", method, ((a, k),), a, agg, window, reserved, mix_label([k]))
                    configs.append(base)
                    if patience is not None:
                        configs.append(replace(base, name=f"{base.name} patience={patience}", patience=patience))
        elif method == "moa":
            if len(models) < 2:
                raise ValueError("moa needs at least two models in --models (the first is the aggregator)")
            share = [samples // len(models) + (i < samples % len(models)) for i in range(len(models))]
            mixes = [share] + [[samples if j == i else 0 for j in range(len(models))] for i in range(1, len(models))]
            if "self-moa" not in methods:
                mixes.insert(0, [samples] + [0] * (len(models) - 1))
            for counts in mixes:
                proposers = tuple((m, n) for m, n in zip(models, counts, strict=True) if n)
                label = mix_label(counts)
                for agg in aggregations:
                    configs.append(Config(f"moa {label} {agg}", "moa", proposers, a, agg, None, reserved, label))
    return configs


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
    workers: int = 4
    """Aggregations of one item run at once (the embedded model decodes them as one batch)."""
    shard: tuple[int, int] | None = None
    """(i, n): run only items i, i+n, i+2n, … of the first `limit`, so that n processes (or
    machines) can share one eval; they may share `out`, as each record is one append."""


def _make_model(name: str, max_tokens: int, slots: int, threads: int | None) -> Any:
    return model_client(name, max_tokens=max_tokens, slots=slots, threads=threads)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill: that unit is simply done again
    return out


def load_records(out: Path) -> dict[tuple[str, str, str], dict]:
    """Finished aggregation records by (task, item, computation key); later lines win."""
    return {(r["task"], r["item"], r["key"]): r for r in _read_jsonl(out / RUNS_FILE)}


def load_draws(out: Path) -> dict[tuple, dict]:
    """Drawn samples by (task, item, model, temperature, max_tokens, seed); later lines win."""
    return {_draw_key(r): r for r in _read_jsonl(out / DRAWS_FILE)}


def cut_replies(
    draws: dict[tuple, dict], task: str, items: list[str], max_tokens: int, samples: int | None = None
) -> dict[str, list[int]]:
    """Drawn replies that reached `max_tokens`, per model, as [reached, drawn], over `items`.

    A reply stopped by the limit has lost its end, usually the answer line, so it is scored
    wrong whatever the method; the report says how many there were. `draws` is the cache as
    `load_draws` reads it. Only the first `samples` of each draw count (those the report's
    configurations use; None: all), and the greedy answers count apart, as "greedy <model>".

    Example:
        >>> draws = {("t", "i1", "m", 0.7, 10, 0): {"samples": [{"usage": {"output_tokens": 10}},
        ...                                                      {"usage": {"output_tokens": 4}}]}}
        >>> cut_replies(draws, "t", ["i1", "i2"], 10), cut_replies(draws, "t", ["i1"], 10, samples=1)
        ({'m': [1, 2]}, {'m': [1, 1]})
    """
    wanted = set(items)
    counts: dict[str, list[int]] = {}
    for (t, item, model, temperature, limit, _seed), record in draws.items():
        if t != task or item not in wanted or limit != max_tokens:
            continue
        tally = counts.setdefault(model if temperature else f"greedy {model}", [0, 0])
        for sample in record["samples"][:samples]:
            tally[0] += _usage(sample.get("usage"))["output_tokens"] >= max_tokens
            tally[1] += 1
    return counts


def cut_aggregations(
    draws: dict[tuple, dict], by_config: dict[str, list[dict]], max_tokens: int, temperature: float, seed: int
) -> dict[str, list[int]]:
    """Aggregator replies that reached `max_tokens`, per configuration, as [reached, calls, unknown].

    A synthesis stopped by the limit has usually lost its answer, which costs `synthesize`
    and not `vote`; the report says how often it happened. Records store each aggregator
    call's output tokens; for older records with one aggregator call it is the run's output
    minus its replayed samples' (from `draws`, the cache as `load_draws` reads it). `unknown`
    counts the older records of several calls, which cannot be split.

    Example:
        >>> draws = {("t", "i", "m", 0.7, 10, 0): {"samples": [{"usage": {"output_tokens": 3}},
        ...                                                    {"usage": {"output_tokens": 4}}]}}
        >>> old = {"task": "t", "item": "i", "aggregations": 1, "usage": {"output_tokens": 17},
        ...        "proposals": [{"model": "m", "sample": 0}, {"model": "m", "sample": 1}]}
        >>> new = {"aggregator_output": [10, 2]}
        >>> cut_aggregations(draws, {"synth": [old, new], "seq": [{**old, "aggregations": 2}]}, 10, 0.7, 0)
        {'synth': [2, 3, 0], 'seq': [0, 0, 1]}
    """
    counts: dict[str, list[int]] = {}
    for name, records in by_config.items():
        tally = [0, 0, 0]
        for r in records:
            outputs = r.get("aggregator_output")
            if outputs is None and r.get("aggregations") == 1:
                outputs = _one_call_output(draws, r, max_tokens, temperature, seed)
            if outputs is None:
                tally[2] += r.get("aggregations", 0) > 0
                continue
            tally[0] += sum(n >= max_tokens for n in outputs)
            tally[1] += len(outputs)
        if any(tally):
            counts[name] = tally
    return counts


def _one_call_output(draws: dict[tuple, dict], r: dict, max_tokens: int, temperature: float, seed: int) -> list[int] | None:
    """An older record's one aggregator call: its run's output tokens minus its samples' ([]: a vote)."""
    try:
        drawn = sum(_usage(draws[(r["task"], r["item"], p["model"], temperature, max_tokens, seed)]
                           ["samples"][p["sample"]].get("usage"))["output_tokens"] for p in r["proposals"])
    except (KeyError, IndexError):  # its draws are not in this cache
        return None
    own = _usage(r.get("usage"))["output_tokens"] - drawn
    return [own] if own > 0 else []


def rescore(out: Path, task: Task, name: str) -> dict[str, int]:
    """Score the cached answers of task `name` in `out` again with the task's current scorer.

    For after a scorer fix: every drawn sample and every record gets its `correct` anew,
    with no model call. `vote` records are dropped instead, since which answer wins
    depends on the task's `answer_of`; the next run recomputes them from the cached
    samples, again with no model call. Records of Seq with `patience` keep where they
    stopped (decided by the extractor of their time) and only their answer is scored.
    Nothing else may be writing to `out` meanwhile. Returns how many verdicts changed
    and how many vote records were dropped.
    """
    items = {item.id: item for item in task.load(None)}
    counts = {"changed": 0, "votes": 0}

    def verdict(item: Item, entry: dict, text_key: str) -> None:
        if entry.get("error"):  # a failed call stays failed
            return
        right = bool(task.score(item, entry[text_key]))
        counts["changed"] += right != entry.get("correct")
        entry["correct"] = right

    draws = _read_jsonl(out / DRAWS_FILE)
    for record in draws:
        if record["task"] == name and record["item"] in items:
            for sample in record["samples"]:
                verdict(items[record["item"]], sample, "text")
    kept = []
    for record in _read_jsonl(out / RUNS_FILE):
        if record["task"] == name and record["item"] in items:
            if "votes" in record:
                counts["votes"] += 1
                continue
            verdict(items[record["item"]], record, "answer")
            for proposal in record["proposals"]:
                verdict(items[record["item"]], proposal, "text")
        kept.append(record)
    for path, records in ((out / DRAWS_FILE, draws), (out / RUNS_FILE, kept)):
        temporary = path.with_suffix(".rescore")
        temporary.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        os.replace(temporary, path)  # whole or not at all: a kill leaves the old cache
    return counts


def _draw_key(r: dict) -> tuple:
    return (r["task"], r["item"], r["model"], r["temperature"], r["max_tokens"], r["seed"])


def _usage(raw: dict | None) -> dict[str, int]:
    raw = raw or {}
    return {k: int(raw.get(k, 0) or 0) for k in ("input_tokens", "output_tokens", "calls")}


class _Sink:
    """Appends JSON lines to a file, each line in one `write` call.

    The file is opened with O_APPEND and every record goes out whole in a single system
    call (not through a buffer that may split it), so processes running shards of one eval
    can append to the same file without interleaving their lines.
    """

    def __init__(self, path: Path):
        if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            with path.open("a", encoding="utf-8") as f:
                f.write("\n")  # end a line cut by a kill, so the next record starts on its own line
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            written = os.write(self._fd, line)
            while written < len(line):  # only short on a full disk or a signal: finish the line
                written += os.write(self._fd, line[written:])

    def close(self) -> None:
        os.close(self._fd)


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
            usage = _usage({**(message.usage_metadata or {}), "calls": 1})
        except Exception as exc:  # recorded; the next run draws it again
            text, error, usage = "", describe_error(exc), _usage(None)
        return [{"text": text, "usage": usage, "error": error, "correct": bool(task.score(item, text)) if not error else None,
                 "latency": round(time.perf_counter() - started, 3)}]
    graph = create_self_moa(model, samples=count - start, temperature=temperature, seed=seed + start,
                            mode="vote", min_proposals=1).compile()
    try:
        result = graph.invoke({"messages": [("user", item.prompt)]})
        proposals = result["proposals"]
    except Exception as exc:  # every sample failed: recorded as failed samples
        proposals = [{"text": "", "usage": None, "error": describe_error(exc), "latency": 0.0}] * (count - start)
    return [{"text": p["text"], "usage": _usage(p["usage"]), "error": p["error"], "latency": p["latency"],
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
        layers = [{"model": ReplayChatModel(model=name, base=s.seed, samples=draws[name]), "samples": n}
                  for name, n in config.proposers]
        aggregator: dict[str, Any] = {"mode": config.aggregate}
        if config.aggregate == "vote":
            aggregator["answer_of"] = getattr(task, "answer_of", None)
        else:
            aggregator["model"] = models[config.aggregator or config.proposers[0][0]]
        if config.window is not None and config.samples > config.window:
            aggregator.update(window=config.window, reserved=config.reserved)
            if config.patience is not None:  # "the same answer" as the task reads answers
                aggregator.update(patience=config.patience, answer_of=getattr(task, "answer_of", None))
        spec = {"layers": [layers], "aggregator": aggregator, "temperature": s.temperature, "seed": s.seed}
        try:
            result = create_from_spec(spec).compile().invoke({"messages": [("user", item.prompt)]})
            answer = result["answer"]
            usage = _usage(result["usage"]["total"])
            aggregations = len(result.get("aggregations") or [])
            last = (result.get("aggregations") or [{}])[-1]
            extra = {k: last[k] for k in ("chosen", "votes") if k in last}
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
            answer, usage, error = "", _usage(None), describe_error(exc)
    return {
        "task": s.task, "item": item.id, "config": config.name, "key": config.key(_settings_key(s, task)),
        "answer": answer, "correct": bool(task.score(item, answer)) if not error else False,
        "proposals": proposals, "aggregations": aggregations, "usage": usage, **extra,
        "wall_s": round(time.perf_counter() - started, 3), "error": error,
    }


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
                            reserved=s.reserved, aggregations=s.aggregations, patience=s.patience)
    skey = _settings_key(s, task)
    max_tokens = skey["max_tokens"]
    done, drawn = load_records(out), load_draws(out)
    need = _needed_draws(configs)
    slots = max([*need.values(), s.workers, 1])
    models: dict[str, Any] = {}

    def model(name: str) -> Any:
        if name not in models:
            models[name] = make_model(name, max_tokens, slots, s.threads)
        return models[name]

    todo = [item for item in items if any(not _finished(done.get((s.task, item.id, c.key(skey)))) for c in configs)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=s.task, unit="item", file=sys.stderr, dynamic_ncols=True)
    runs, draws_sink = _Sink(out / RUNS_FILE), _Sink(out / DRAWS_FILE)
    try:
        for item in todo:
            if bar:
                bar.set_postfix_str(f"item {item.id}: drawing", refresh=True)
            samples = _draw_item(task, item, s, need, drawn, model, max_tokens, draws_sink,
                                 greedy="single" in s.methods)
            pending, seen = [], set()
            for c in configs:
                key = c.key(skey)
                if not _finished(done.get((s.task, item.id, key))) and key not in seen:
                    seen.add(key)
                    pending.append(c)
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
    by_config: dict[str, list[dict]] = {}
    for c in configs:
        recs = [done.get((s.task, item.id, c.key(skey))) for item in items]
        by_config[c.name] = [{**r, "config": c.name} for r in recs if r is not None]
    return by_config


def _draw_item(task: Task, item: Item, s: EvalSettings, need: dict[str, int], drawn: dict[tuple, dict],
               model: Callable[[str], Any], max_tokens: int, sink: _Sink, *, greedy: bool) -> dict[str, list[dict]]:
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


__all__ = ["AGGREGATIONS", "METHODS", "Config", "EvalSettings", "aggregate_unit", "build_configs", "cut_aggregations", "cut_replies",
           "draw", "load_draws", "load_records", "mix_label", "rescore", "run_eval"]
