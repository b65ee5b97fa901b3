"""The configurations an eval compares: methods, proposer mixes and aggregation modes.

A configuration's `key` hashes what determines its results, so configurations that
compute the same thing (and reruns) share one cached record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from selfmoa.prompts import SELECT_ASK, SELECT_PROMPT

METHODS = ("single", "self-moa", "moa", "seq")
AGGREGATIONS = ("synthesize", "select", "vote")


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
    order: str = "given"
    """select only: how the judge sees the candidates (given, shuffled, both)."""
    adaptive: tuple[int, int, bool] | None = None
    """self-moa only: (batch, margin, anchor) of adaptive sampling, replayed on a prefix of the draw."""

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
            if self.order != "given":  # records made before orders existed showed the candidates as drawn
                comp["order"] = self.order
        if self.adaptive is not None:
            comp["adaptive"] = list(self.adaptive)
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
    patience: int | None = None, orders: Sequence[str] = ("given",), adaptive: Sequence[tuple[int, int, bool]] = (),
) -> list[Config]:
    """The configurations of an eval, in report order.

    `single` is the first model, greedy. `self-moa` samples the first model k times and
    aggregates in each mode; `seq` aggregates the same samples through a sliding window
    (synthesize and select; with `patience`, also stopping early); `moa` mixes the models
    (for A, B: AAABBB and BBBBBB, aggregated by A; AAAAAA is self-moa). `orders` adds a
    self-moa `select` per order of showing the candidates besides "given" (named "select
    shuffled", "select both"); `adaptive` adds, per (batch, margin, anchor) rule, a self-moa
    `vote` that stops drawing once the samples agree, replayed on a prefix of the same draw.

    Example:
        >>> [c.name for c in build_configs(["single", "moa"], ["a", "b"], samples=6, aggregations=["vote"])]
        ['single', 'moa AAAAAA vote', 'moa AAABBB vote', 'moa BBBBBB vote']
    """
    _check_options(methods, models, samples=samples, sweep=sweep, window=window, reserved=reserved,
                   aggregations=aggregations, patience=patience)
    if any(o not in ("given", "shuffled", "both") for o in orders) or (adaptive and "self-moa" not in methods):
        raise ValueError("--select-orders takes given, shuffled and both; --adaptive needs self-moa in --methods")
    a = models[0]
    ks = sorted({*sweep, samples})
    configs: list[Config] = []
    for method in methods:
        if method == "single":
            configs.append(Config("single", "single", ((a, 1),)))
        elif method == "self-moa":
            for k in ks:
                for agg in aggregations:
                    for order in (orders if agg == "select" else ("given",)):
                        name = f"self-moa k={k} {agg}" + ("" if order == "given" else f" {order}")
                        configs.append(Config(name, method, ((a, k),), a, agg, None, reserved, mix_label([k]), order=order))
            for batch, margin, anchor in adaptive:
                name = f"adaptive k={samples} b={batch} m={margin}{' anchored' if anchor else ''} vote"
                configs.append(Config(name, method, ((a, samples),), a, "vote", None, reserved, mix_label([samples]),
                                      adaptive=(batch, margin, anchor)))
        elif method == "seq":
            for k in ks:
                for agg in (x for x in aggregations if x != "vote"):
                    base = Config(f"seq k={k} {agg}", method, ((a, k),), a, agg, window, reserved, mix_label([k]))
                    configs.append(base)
                    if patience is not None:
                        configs.append(replace(base, name=f"{base.name} patience={patience}", patience=patience))
        elif method == "moa":
            configs.extend(_moa_configs(methods, models, samples=samples, reserved=reserved, aggregations=aggregations))
    return configs


def _check_options(
    methods: Sequence[str], models: Sequence[str], *, samples: int, sweep: Sequence[int], window: int,
    reserved: int, aggregations: Sequence[str], patience: int | None,
) -> None:
    """Refuse the options `build_configs` cannot make configurations of, saying how to fix them."""
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


def _moa_configs(
    methods: Sequence[str], models: Sequence[str], *, samples: int, reserved: int, aggregations: Sequence[str]
) -> list[Config]:
    """The mixes of `moa`: the first model alone (unless self-moa runs it), an even share, each other model alone."""
    if len(models) < 2:
        raise ValueError("moa needs at least two models in --models (the first is the aggregator)")
    a = models[0]
    share = [samples // len(models) + (i < samples % len(models)) for i in range(len(models))]
    mixes = [share] + [[samples if j == i else 0 for j in range(len(models))] for i in range(1, len(models))]
    if "self-moa" not in methods:
        mixes.insert(0, [samples] + [0] * (len(models) - 1))
    configs: list[Config] = []
    for counts in mixes:
        proposers = tuple((m, n) for m, n in zip(models, counts, strict=True) if n)
        label = mix_label(counts)
        for agg in aggregations:
            configs.append(Config(f"moa {label} {agg}", "moa", proposers, a, agg, None, reserved, label))
    return configs


__all__ = ["AGGREGATIONS", "METHODS", "Config", "build_configs", "mix_label"]
