"""The eval's cache: drawn samples in `<out>/draws.jsonl`, finished aggregations in `<out>/runs.jsonl`.

Both files are JSON lines, appended one whole record at a time (`Sink`), so that shards
of one eval can share them, and read back with later lines winning, so that a rerun does
only what is missing. Also here: what the report counts from them (replies cut short by
`max_tokens`) and `rescore`, which scores the cached answers again after a scorer fix.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from selfmoa.evals.tasks import Item, Task

RUNS_FILE = "runs.jsonl"
DRAWS_FILE = "draws.jsonl"


# The fields a record is looked up by (scalars, as they are parts of keys) and the lists it is read
# through, per file: a line without them is no record of that file.
_SHAPES = {
    RUNS_FILE: (("task", "item", "key"), ("proposals",)),
    DRAWS_FILE: (("task", "item", "model", "temperature", "max_tokens", "seed"), ("samples",)),
}
_warned: set[tuple[str, int]] = set()  # (file, skipped lines) already told, so a second read in a run says nothing


def _read_jsonl(path: Path) -> list[dict]:
    """The whole records of a cache file; lines that are not (cut by a kill, edited) are skipped and counted.

    Read as bytes and decoded line by line: a kill inside a multi-byte character spoils that
    line only. One line on stderr says how many were skipped; their units are done again.
    """
    if not path.exists():
        return []
    keys, lists = _SHAPES.get(path.name, ((), ()))
    out, skipped = [], 0
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            record = None
        if _is_record(record, keys, lists):
            out.append(record)
        elif line.strip():
            skipped += 1
    if skipped and (str(path), skipped) not in _warned:
        _warned.add((str(path), skipped))
        lines = "line" if skipped == 1 else "lines"
        print(f"selfmoa eval: skipped {skipped} {lines} of {path} that are not whole records (cut short by a kill, "
              "or edited); those units will be recomputed", file=sys.stderr)
    return out


def _is_record(value: Any, keys: tuple[str, ...], lists: tuple[str, ...]) -> bool:
    if not isinstance(value, dict):
        return False
    scalar = (str, int, float, bool, type(None))
    return all(isinstance(value.get(k, ...), scalar) for k in keys) and all(
        isinstance(value.get(k), list) and all(isinstance(x, dict) for x in value[k]) for k in lists)


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
            tally[0] += usage_counts(sample.get("usage"))["output_tokens"] >= max_tokens
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
        drawn = sum(usage_counts(draws[(r["task"], r["item"], p["model"], temperature, max_tokens, seed)]
                           ["samples"][p["sample"]].get("usage"))["output_tokens"] for p in r["proposals"])
    except (KeyError, IndexError):  # its draws are not in this cache
        return None
    own = usage_counts(r.get("usage"))["output_tokens"] - drawn
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


def usage_counts(raw: dict | None) -> dict[str, int]:
    """The input, output and call counts of a usage dict, as records store them (missing: 0)."""
    raw = raw or {}
    return {k: int(raw.get(k, 0) or 0) for k in ("input_tokens", "output_tokens", "calls")}


class Sink:
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
        """Append `record` as one JSON line."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            written = os.write(self._fd, line)
            while written < len(line):  # only short on a full disk or a signal: finish the line
                written += os.write(self._fd, line[written:])

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


__all__ = ["DRAWS_FILE", "RUNS_FILE", "Sink", "cut_aggregations", "cut_replies", "load_draws", "load_records", "rescore",
           "usage_counts"]
