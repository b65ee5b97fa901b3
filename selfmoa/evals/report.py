"""Write an eval's figures: results.md (table), results.json (all figures), PNG plots."""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfmoa.evals.metrics import Embedder, diversity_method, fit_quality_diversity, memoized, summarize
from selfmoa.evals.stats import mcnemar_exact, wilson

CUT_WARNING = 0.05
"""Share of drawn replies at max_tokens from which "What this shows" warns of the cut."""


def build_report(by_config: dict[str, list[dict]], meta: dict[str, Any], embed: Embedder | None) -> dict[str, Any]:
    """All figures: one row per configuration, paired tests, the quality–diversity fit, the metadata.

    Each row has the accuracy with its 95% Wilson interval, calls and tokens per item, the
    mean accuracy of its samples (`quality`), the share of items with a right sample
    (`oracle`, pass@k), and exact McNemar tests against `single` and against the `vote`
    configuration on the same samples, over the items both have.
    """
    rows = []
    computed: dict[tuple, str] = {}
    cached = memoized(embed) if embed is not None else None
    for name, records in by_config.items():
        row = {"config": name, **summarize(records, cached)}
        if records:
            row["interval"] = list(wilson(row["correct"], row["items"]))
        keys = tuple((r["item"], r["key"]) for r in records)
        if keys and keys in computed:
            row["same_as"] = computed[keys]  # e.g. seq whose window holds every sample = self-moa
        computed.setdefault(keys, name)
        rows.append(row)
    for row in rows:
        pairs = {"single": "single", "vote": _vote_of(row["config"]), "fixed": _fixed_of(row["config"])}
        for key, against in pairs.items():
            if against and against != row["config"] and by_config.get(against) and by_config.get(row["config"]):
                row[f"vs_{key}"] = _paired(by_config[row["config"]], by_config[against])
    # A computation reported under two names counts once in the fit.
    fitted = [r for r in rows if r.get("items") and not r.get("same_as")]
    # The paper's fit is of its aggregator, synthesis; other modes of the same samples would
    # give one point several accuracies. Reports from before the modes name none.
    fit = fit_quality_diversity([r for r in fitted if r["config"].endswith(" synthesize")] or fitted)
    return {"meta": meta, "rows": rows, "fit": fit, "diversity_method": diversity_method(embed)}


_ENSEMBLE = re.compile(r"(self-moa|seq) k=(\d+) (synthesize|select|vote)")
"""A sampled ensemble's configuration name: method, k and mode."""


def _vote_of(config: str) -> str | None:
    """The vote configuration on the same samples: 'self-moa k=4 select' -> 'self-moa k=4 vote'."""
    m = re.fullmatch(r"(self-moa k=\d+|moa \w+) (synthesize|select|vote)", config)
    if m is None:
        m2 = re.fullmatch(r"seq (k=\d+) .*", config)
        return f"self-moa {m2.group(1)} vote" if m2 else None
    return f"{m.group(1)} vote"


def _fixed_of(config: str) -> str:
    """The same seq run to its last sample: 'seq k=12 synthesize patience=2' -> 'seq k=12 synthesize'."""
    return re.sub(r" patience=\d+$", "", config)


def _paired(a: list[dict], b: list[dict]) -> dict[str, Any]:
    right_b = {r["item"]: bool(r["correct"]) for r in b}
    both = [r for r in a if r["item"] in right_b]
    test = mcnemar_exact([bool(r["correct"]) for r in both], [right_b[r["item"]] for r in both])
    return {"items": len(both), **test}


def findings(report: dict[str, Any], alpha: float = 0.05) -> list[str]:
    """What the table shows, as sentences computed from its numbers, losses included.

    The best configuration and its paired test against `single`; every configuration
    significantly better or worse than `single` (exact McNemar p < `alpha`); where choosing
    by vote differs significantly from another aggregation of the same samples; how often
    model A's samples are right against its greedy answer (sampling alone can cost accuracy);
    and how much of the oracle (any sample right) the best aggregation reaches.

    Example:
        >>> rows = [{"config": "single", "items": 50, "correct": 20, "accuracy": 0.4},
        ...         {"config": "self-moa k=4 vote", "items": 50, "correct": 15, "accuracy": 0.3, "oracle": 0.6,
        ...          "vs_single": {"items": 50, "a_only": 2, "b_only": 9, "p": 0.065}}]
        >>> for line in findings({"rows": rows}):
        ...     print(line)
        The best configuration is single, right on 20 of 50 items (0.400).
        No configuration differs significantly from single (paired exact McNemar, p < 0.05).
        At least one sample was right on 0.600 of items (self-moa k=4 vote); the best aggregation of them reached 0.300.
    """
    rows = [r for r in report["rows"] if r.get("items") and not r.get("same_as")]
    if not rows:
        return []
    best = max(rows, key=lambda r: (r["accuracy"], -r.get("calls_per_item", 0)))
    out = [f"The best configuration is {best['config']}, right on {best['correct']} of {best['items']} items "
           f"({best['accuracy']:.3f})" + (f"; against single {_test(best['vs_single'])}." if best.get("vs_single") else ".")]
    better = [r for r in rows if (t := r.get("vs_single")) and t["p"] < alpha and t["a_only"] > t["b_only"]]
    worse = [r for r in rows if (t := r.get("vs_single")) and t["p"] < alpha and t["a_only"] < t["b_only"]]
    if not better and not worse:
        out.append(f"No configuration differs significantly from single (paired exact McNemar, p < {alpha:g}).")
    for label, group in (("better", better), ("worse", worse)):
        if group:
            listed = "; ".join(f"{r['config']} {_test(r['vs_single'])}" for r in group)
            out.append(f"Significantly {label} than single (p < {alpha:g}): {listed}.")
    against_vote = [r for r in rows if (t := r.get("vs_vote")) and t["p"] < alpha]
    if against_vote:
        listed = "; ".join(
            f"{r['config']} {'beats' if r['vs_vote']['a_only'] > r['vs_vote']['b_only'] else 'loses to'} vote "
            f"{_test(r['vs_vote'])}" for r in against_vote
        )
        out.append(f"On the same samples: {listed}.")
    sampled = [(int(m.group(2)), r) for r in rows
               if (m := _ENSEMBLE.fullmatch(r["config"])) and m.group(1) == "self-moa" and r.get("quality") is not None]
    single = next((r for r in rows if r["config"] == "single"), None)
    if sampled and single:  # sampling can cost accuracy before any aggregation
        top = max(sampled, key=lambda kr: kr[0])[1]  # the largest k: most samples
        temperature = (report.get("meta") or {}).get("temperature")
        out.append(f"Model A's samples{f' (temperature {temperature})' if temperature is not None else ''} are right "
                   f"on {top['quality']:.3f} of draws ({top['config']}), its greedy answer on {single['accuracy']:.3f} "
                   "(single).")
    with_oracle = [r for r in rows if r.get("oracle") is not None]
    if with_oracle:
        top = max(with_oracle, key=lambda r: r["oracle"])
        reached = max(r["accuracy"] for r in rows if r["config"] != "single")
        out.append(f"At least one sample was right on {top['oracle']:.3f} of items ({top['config']}); "
                   f"the best aggregation of them reached {reached:.3f}.")
    meta = report.get("meta") or {}
    for name, (n, total) in (meta.get("cut") or {}).items():
        if total and n / total >= CUT_WARNING:
            out.append(f"{n / total:.0%} of the {name} replies ({n} of {total}) reached max_tokens "
                       f"{meta.get('max_tokens')} and were cut short; a larger --max-tokens would show how much "
                       "that costs each configuration.")
    for name, (n, calls, _unknown) in _cut_aggregations(report).items():
        if calls and n / calls >= CUT_WARNING:
            out.append(f"{name}: {n / calls:.0%} of its aggregator replies ({n} of {calls}) reached max_tokens "
                       f"{meta.get('max_tokens')}; a synthesis cut short usually loses its answer, so this "
                       "configuration's accuracy may be understated.")
    return out


def _cut_aggregations(report: dict[str, Any]) -> dict[str, list[int]]:
    """Aggregator replies at max_tokens per configuration, leaving out rows that repeat another."""
    repeats = {r["config"] for r in report["rows"] if r.get("same_as")}
    counts = (report.get("meta") or {}).get("cut_aggregations") or {}
    return {name: t for name, t in counts.items() if name not in repeats}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _test(t: dict | None) -> str:
    if not t:
        return "–"
    return f"+{t['a_only']}/−{t['b_only']}, p={t['p']:.2g}"


def _shard_note(shard: Sequence[int] | None) -> list[str]:
    if not shard:
        return []
    i, n = shard
    return [f"Shard {i}/{n}: items {i}, {i + n}, {i + 2 * n}, … of the task only; run again without --shard to "
            "report on all of them.", ""]


def markdown(report: dict[str, Any]) -> str:
    """The results table in Markdown, with the fit and the run's metadata under it."""
    meta = report["meta"]
    lines = [
        f"# selfmoa eval: {meta['task']}",
        "",
        f"Models: {', '.join(meta['models'])} (A = first: it proposes and aggregates). Samples k = "
        f"{meta['samples']}{' (sweep ' + ', '.join(map(str, meta['sweep'])) + ')' if meta.get('sweep') else ''}, "
        f"temperature {meta['temperature']}, max_tokens {meta['max_tokens']}, seed {meta['seed']}. "
        "Every configuration aggregates the same drawn samples of each item (sample once, aggregate many ways).",
        "",
        *_shard_note(meta.get("shard")),
        "Accuracy with its 95% Wilson interval. *vs single* and *vs vote*: items only this configuration got "
        "right / items only the other got right, and the exact McNemar p-value, over the same items. "
        "*mean sample*: accuracy of the samples themselves; *oracle*: share of items with at least one right "
        "sample (pass@k).",
        "",
        "| config | items | accuracy [95% CI] | vs single | vs vote | mean sample | oracle | diversity "
        "| calls/item | in tok/item | out tok/item | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        if not r.get("items"):
            lines.append(f"| {r['config']} | 0 | | | | | | | | | | |")
            continue
        same = f" (= {r['same_as']})" if r.get("same_as") else ""
        lo, hi = r.get("interval", (0.0, 1.0))
        lines.append(
            f"| {r['config']}{same} | {r['items']} | {r['accuracy']:.3f} ({r['correct']}/{r['items']}) "
            f"[{lo:.2f}, {hi:.2f}] | {_test(r.get('vs_single'))} | {_test(r.get('vs_vote'))} | {_fmt(r['quality'])} "
            f"| {_fmt(r.get('oracle'))} | {_fmt(r['diversity'], 2)} | {r['calls_per_item']:.1f} "
            f"| {r['input_tokens_per_item']:.0f} | {r['output_tokens_per_item']:.0f} | {r['errors']} |"
        )
    by_name = {r["config"]: r for r in report["rows"]}
    for r in report["rows"]:
        base = by_name.get(_fixed_of(r["config"]))
        if r.get("vs_fixed") and base and base.get("calls_per_item"):
            fewer = 1 - r["calls_per_item"] / base["calls_per_item"]
            lines += ["", (
                f"*{r['config']}* against *{base['config']}* on the same samples: {r['calls_per_item']:.2f} calls "
                f"per item against {base['calls_per_item']:.2f} ({fewer:.1%} fewer), accuracy {r['accuracy']:.3f} "
                f"against {base['accuracy']:.3f} (95% interval of the latter [{base['interval'][0]:.2f}, "
                f"{base['interval'][1]:.2f}]); paired: {_test(r['vs_fixed'])}."
            )]
    cut = meta.get("cut") or {}
    if cut:
        listed = "; ".join(f"{name}: {n} of {total}" for name, (n, total) in cut.items())
        lines += ["", f"Drawn replies that reached max_tokens {meta['max_tokens']} (cut short, so usually scored "
                      f"wrong): {listed}."]
    cut_aggs = {name: t for name, t in _cut_aggregations(report).items() if t[0] or t[2]}
    if cut_aggs:
        listed = "; ".join((f"{name}: {n} of {calls}" if calls else f"{name}: –")
                           + (f" (not known for {u} runs recorded before per-call counts)" if u else "")
                           for name, (n, calls, u) in cut_aggs.items())
        lines += ["", f"Aggregator replies that reached max_tokens {meta['max_tokens']}: {listed}; none in the other "
                      "configurations."]
    elif meta.get("cut_aggregations"):
        lines += ["", f"No aggregator reply reached max_tokens {meta['max_tokens']}."]
    lines += ["", "What this shows (computed from the table):", ""] + [f"- {f}" for f in findings(report)]
    fit = report["fit"]
    lines.append("")
    if report.get("diversity_method"):
        d = report["diversity_method"]
        lines.append(f"Diversity: {d['metric']}, over {d['embeddings']} embeddings.")
        lines.append("")
    if "alpha" in fit:
        lines.append(
            f"Fit over {fit['points']} distinct sample sets ({fit['configs']} configurations): accuracy ≈ "
            f"{fit['alpha']:.3f}·quality + {fit['beta']:.3f}·diversity + {fit['gamma']:.3f}, {_r2(fit)}. "
            f"{fit['note']}".rstrip()
        )
    else:
        lines.append(f"No quality–diversity fit: {fit['note']}.")
    lines += ["", f"Command: `{meta['command']}`", "",
              f"Machine: {meta['machine']}. Date: {meta['date']}. Wall time of this invocation: {meta['elapsed_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def machine() -> str:
    """CPU count and model, for the record."""
    import os

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def plots(report: dict[str, Any], out: Path, prefix: str = "") -> list[Path]:
    """PNG plots: accuracy per config, quality/diversity vs accuracy, accuracy vs samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r.get("items")]
    task = report["meta"]["task"]
    written = []

    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 3.6))
    ax.bar([r["config"] for r in rows], [r["accuracy"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(i, r["accuracy"], f"{r['accuracy']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{task}: accuracy per configuration (n={rows[0]['items'] if rows else 0})")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    written.append(out / f"{prefix}accuracy.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    pts = [r for r in rows if r.get("quality") is not None and not r.get("same_as")]
    if pts:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
        for ax, key, label in ((axes[0], "quality", "proposal quality (mean sample accuracy)"),
                               (axes[1], "diversity", "diversity (Vendi score)")):
            sel = [r for r in pts if r.get(key) is not None]
            ax.scatter([r[key] for r in sel], [r["accuracy"] for r in sel])
            for r in sel:
                ax.annotate(r["config"], (r[key], r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(label)
        axes[0].set_ylabel("final accuracy")
        fit = report["fit"]
        title = (f"accuracy ≈ {fit['alpha']:.2f}·q + {fit['beta']:.2f}·d + {fit['gamma']:.2f}, {_r2(fit)} "
                 f"({fit['points']} sample sets)" if "alpha" in fit else f"no fit: {fit['note']}")
        fig.suptitle(f"{task}: quality vs diversity — {title}", fontsize=9)
        fig.tight_layout()
        written.append(out / f"{prefix}quality_diversity.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        m = _ENSEMBLE.fullmatch(r["config"])
        if m and not r.get("same_as"):  # seq with every sample in one window is self-moa: drawn once
            k = int(m.group(2))
            series.setdefault(f"{m.group(1)} {m.group(3)}", []).append((k, r["accuracy"]))
            if m.group(1) == "self-moa" and r.get("oracle") is not None:
                series.setdefault("oracle (any sample right)", []).append((k, r["oracle"]))
                series.setdefault("mean sample", []).append((k, r["quality"]))
    if any(len(v) >= 2 for v in series.values()):
        fig, ax = plt.subplots(figsize=(6, 4))
        styles = {"oracle (any sample right)": ":", "mean sample": ":"}
        for name, pts_k in sorted(series.items()):
            pts_k = sorted(set(pts_k))
            ax.plot([k for k, _ in pts_k], [a for _, a in pts_k], marker="o", linestyle=styles.get(name, "-"), label=name)
        single = next((r for r in rows if r["config"] == "single"), None)
        if single:
            ax.axhline(single["accuracy"], color="grey", linestyle="--", label="single (greedy)")
        ax.set_xticks(sorted({k for pts_k in series.values() for k, _ in pts_k}))
        ax.set_xlabel("samples k")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{task}: accuracy vs samples (n={rows[0]['items']} items, same samples for every line)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / f"{prefix}samples.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def write_report(report: dict[str, Any], out: Path, *, with_plots: bool = True, name: str = "results") -> list[Path]:
    """Write NAME.json, NAME.md and (optionally) the plots into `out`.

    Several reports can share one directory, and so its cache: the default name writes
    `results.*` and plain plot names (`samples.png`), any other prefixes the plots too
    (`patience-samples.png`).
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / f"{name}.md").write_text(markdown(report), encoding="utf-8")
    written = [out / f"{name}.json", out / f"{name}.md"]
    if with_plots:
        written += plots(report, out, prefix="" if name == "results" else f"{name}-")
    return written


def _r2(fit: dict) -> str:
    return "R² undefined (equal accuracies)" if fit["r2"] is None else f"R² = {fit['r2']:.3f}"
