"""Write an eval's figures: results.md (tables), results.json (all figures), PNG plots (`selfmoa.evals.plots`)."""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfmoa.evals.agreement import (
    agreement_figures,
    agreement_findings,
    agreement_markdown,
    position_markdown,
    position_picks,
)
from selfmoa.evals.metrics import Embedder, diversity_method, fit_quality_diversity, memoized, r2_text, summarize
from selfmoa.evals.plots import ENSEMBLE, plots
from selfmoa.evals.stats import holm, mcnemar_exact, paired_difference, wilson
from selfmoa.nodes.answers import AnswerOf

CUT_WARNING = 0.05
"""Share of drawn replies at max_tokens from which "What this shows" warns of the cut."""


def build_report(by_config: dict[str, list[dict]], meta: dict[str, Any], embed: Embedder | None,
                 answer_of: AnswerOf | None = None) -> dict[str, Any]:
    """All figures: one row per configuration, paired tests, agreement, the quality–diversity fit, the metadata.

    Each row has the accuracy with its 95% Wilson interval, calls and tokens per item, the
    mean accuracy of its samples (`quality`), the share of items with a right sample
    (`oracle`, pass@k), and exact McNemar tests against `single` and against the `vote`
    configuration on the same samples, over the items both have, each with its p-value
    Holm-adjusted within its family (all tests against `single`; all against vote). A
    configuration with several samples also has `agreement` (what the samples' agreement
    predicts, read with the task's `answer_of`: see `selfmoa.evals.agreement`), and a
    one-shot `select` the positions its judge picked (`position`).
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
        else:
            _add_agreement(row, records, answer_of)
        computed.setdefault(keys, name)
        rows.append(row)
    _add_tests(rows, by_config)
    # A computation reported under two names counts once in the fit.
    fitted = [r for r in rows if r.get("items") and not r.get("same_as")]
    # The paper's fit is of its aggregator, synthesis; other modes of the same samples would
    # give one point several accuracies. Reports from before the modes name none.
    fit = fit_quality_diversity([r for r in fitted if r["config"].endswith(" synthesize")] or fitted)
    return {"meta": meta, "rows": rows, "fit": fit, "diversity_method": diversity_method(embed)}


def _add_agreement(row: dict[str, Any], records: list[dict], answer_of: AnswerOf | None) -> None:
    """Agreement against accuracy for an ensemble; for a one-shot `select`, the positions picked."""
    figures = agreement_figures(records, answer_of)
    if figures:
        row["agreement"] = figures
    if re.search(r"\bselect\b", row["config"]) and (picks := position_picks(records)):
        row["position"] = picks


def _add_tests(rows: list[dict[str, Any]], by_config: dict[str, list[dict]]) -> None:
    """Paired tests against single, vote and fixed N; p-values against single and vote Holm-adjusted."""
    for row in rows:
        pairs = {"single": "single", "vote": _vote_of(row["config"]), "fixed": _fixed_of(row["config"])}
        for key, against in pairs.items():
            if against and against != row["config"] and by_config.get(against) and by_config.get(row["config"]):
                row[f"vs_{key}"] = _paired(by_config[row["config"]], by_config[against])
    by_name = {r["config"]: r for r in rows}
    for key in ("vs_single", "vs_vote"):
        # One family each; a row that repeats another's computation repeats its test, counted once.
        family = [r for r in rows if r.get(key) and not r.get("same_as")]
        for row, adjusted in zip(family, holm([r[key]["p"] for r in family]), strict=True):
            row[key]["p_holm"] = adjusted
        for row in rows:
            original = by_name.get(row.get("same_as") or "", {}).get(key)
            if row.get(key) and original and "p_holm" in original:
                row[key]["p_holm"] = original["p_holm"]


def _vote_of(config: str) -> str | None:
    """The vote configuration on the same samples: 'self-moa k=4 select' -> 'self-moa k=4 vote'.

    Example:
        >>> _vote_of("self-moa k=6 select shuffled"), _vote_of("adaptive k=6 b=2 m=2 anchored vote")
        ('self-moa k=6 vote', 'self-moa k=6 vote')
    """
    m = re.fullmatch(r"(self-moa k=\d+|moa \w+) (synthesize|select|vote)( shuffled| both)?", config)
    if m is None:
        m2 = re.fullmatch(r"(?:seq|adaptive) (k=\d+) .*", config)
        return f"self-moa {m2.group(1)} vote" if m2 else None
    return f"{m.group(1)} vote"


def _fixed_of(config: str) -> str:
    """The same seq run to its last sample: 'seq k=12 synthesize patience=2' -> 'seq k=12 synthesize'."""
    return re.sub(r" patience=\d+$", "", config)


def _paired(a: list[dict], b: list[dict]) -> dict[str, Any]:
    right_b = {r["item"]: bool(r["correct"]) for r in b}
    both = [r for r in a if r["item"] in right_b]
    test = mcnemar_exact([bool(r["correct"]) for r in both], [right_b[r["item"]] for r in both])
    return {"items": len(both), **test, "difference": paired_difference(int(test["a_only"]), int(test["b_only"]), len(both))}


def findings(report: dict[str, Any], alpha: float = 0.05) -> list[str]:
    """What the table shows, as sentences computed from its numbers, losses included.

    The best configuration and its paired test against `single`; every configuration
    significantly better or worse than `single` (exact McNemar p < `alpha`); where choosing
    by vote differs significantly from another aggregation of the same samples; which of
    those stay below `alpha` once Holm-adjusted; how often model A's samples are right
    against its greedy answer (sampling alone can cost accuracy); how much of the oracle
    (any sample right) the best aggregation reaches; what the samples' agreement predicts
    and how often `select` picks the sample shown first; replies cut by max_tokens.

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
    out += _significant(rows, alpha)
    sampled = [(int(m.group(2)), r) for r in rows
               if (m := ENSEMBLE.fullmatch(r["config"])) and m.group(1) == "self-moa" and r.get("quality") is not None]
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
    return out + agreement_findings(report) + _cut_warnings(report)


def _significant(rows: list[dict[str, Any]], alpha: float) -> list[str]:
    """The paired tests with p < `alpha`, against single and against vote, and which survive Holm's correction."""
    out = []
    better = [r for r in rows if (t := r.get("vs_single")) and t["p"] < alpha and t["a_only"] > t["b_only"]]
    worse = [r for r in rows if (t := r.get("vs_single")) and t["p"] < alpha and t["a_only"] < t["b_only"]]
    if not better and not worse:
        out.append(f"No configuration differs significantly from single (paired exact McNemar, p < {alpha:g}).")
    for label, group in (("better", better), ("worse", worse)):
        if group:
            listed = "; ".join(f"{r['config']} {_test(r['vs_single'])}" for r in group)
            out.append(f"Significantly {label} than single (p < {alpha:g}): {listed}.")
    out += _holm_note(rows, "vs_single", "single", alpha)
    against_vote = [r for r in rows if (t := r.get("vs_vote")) and t["p"] < alpha]
    if against_vote:
        listed = "; ".join(
            f"{r['config']} {'beats' if r['vs_vote']['a_only'] > r['vs_vote']['b_only'] else 'loses to'} vote "
            f"{_test(r['vs_vote'])}" for r in against_vote
        )
        out.append(f"On the same samples: {listed}.")
        out += _holm_note(rows, "vs_vote", "vote", alpha)
    return out


def _holm_note(rows: list[dict[str, Any]], key: str, against: str, alpha: float) -> list[str]:
    """Which raw-significant tests stay below `alpha` once Holm-adjusted over their family."""
    family = [r for r in rows if r.get(key) and "p_holm" in r[key]]
    if not any(r[key]["p"] < alpha for r in family):
        return []
    kept = [r["config"] for r in family if r[key]["p_holm"] < alpha]
    return [f"Holm-adjusted over the {len(family)} comparisons with {against}, "
            + (f"p < {alpha:g} remains for: {', '.join(kept)}." if kept else f"none remains below {alpha:g}.")]


def _cut_warnings(report: dict[str, Any]) -> list[str]:
    """Warnings for replies stopped by max_tokens: drawn replies, then aggregator replies."""
    out = []
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
    holm_p = f" (Holm {t['p_holm']:.2g})" if "p_holm" in t else ""
    d, lo, hi = t.get("difference") or (None, None, None)
    diff = "" if d is None else f", Δ {d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return f"+{t['a_only']}/−{t['b_only']}, p={t['p']:.2g}{holm_p}{diff}"


def _shard_note(shard: Sequence[int] | None) -> list[str]:
    if not shard:
        return []
    i, n = shard
    return [f"Shard {i}/{n}: items {i}, {i + n}, {i + 2 * n}, … of the task only; run again without --shard to "
            "report on all of them.", ""]


def markdown(report: dict[str, Any]) -> str:
    """The results table in Markdown, with what it shows, agreement, the fit and the run's metadata under it."""
    meta = report["meta"]
    lines = _header(meta) + _table(report["rows"]) + _fixed_notes(report["rows"]) + _cut_notes(report)
    lines += agreement_markdown(report) + position_markdown(report)
    lines += ["", "What this shows (computed from the tables):", ""] + [f"- {f}" for f in findings(report)]
    fit = report["fit"]
    lines.append("")
    if report.get("diversity_method"):
        d = report["diversity_method"]
        lines.append(f"Diversity: {d['metric']}, over {d['embeddings']} embeddings.")
        lines.append("")
    if "alpha" in fit:
        lines.append(
            f"Fit over {fit['points']} distinct sample sets ({fit['configs']} configurations): accuracy ≈ "
            f"{fit['alpha']:.3f}·quality + {fit['beta']:.3f}·diversity + {fit['gamma']:.3f}, {r2_text(fit)}. "
            f"{fit['note']}".rstrip()
        )
    else:
        lines.append(f"No quality–diversity fit: {fit['note']}.")
    lines += ["", f"Command: `{meta['command']}`", "",
              f"Machine: {meta['machine']}. Date: {meta['date']}. Wall time of this invocation: {meta['elapsed_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def _header(meta: dict[str, Any]) -> list[str]:
    return [
        f"# selfmoa eval: {meta['task']}",
        "",
        f"Models: {', '.join(meta['models'])} (A = first: it proposes and aggregates). Samples k = "
        f"{meta['samples']}{' (sweep ' + ', '.join(map(str, meta['sweep'])) + ')' if meta.get('sweep') else ''}, "
        f"temperature {meta['temperature']}, max_tokens {meta['max_tokens']}, seed {meta['seed']}. "
        "Every configuration aggregates the same drawn samples of each item (sample once, aggregate many ways).",
        "",
        *_shard_note(meta.get("shard")),
        "Accuracy with its 95% Wilson interval. *vs single* and *vs vote*: items only this configuration got "
        "right / items only the other got right, and the exact McNemar p-value, over the same items; in brackets "
        "the p-value Holm-adjusted over all the table's comparisons with single (with vote, for *vs vote*), each "
        "repeated computation counted once. *mean sample*: accuracy of the samples themselves; *oracle*: share of "
        "items with at least one right sample (pass@k).",
        "",
    ]


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """The main table; a *samples drawn* column when a configuration draws as many samples as it needs."""
    drawn = any(r.get("drawn_per_item") is not None for r in rows)
    extra = " samples drawn (mean) |" if drawn else ""
    lines = ["| config | items | accuracy [95% CI] | vs single | vs vote | mean sample | oracle | diversity |"
             f"{extra} calls/item | in tok/item | out tok/item | errors |",
             "| --- |" + " ---: |" * (11 + drawn)]
    for r in rows:
        if not r.get("items"):
            lines.append(f"| {r['config']} | 0 |" + " |" * (10 + drawn))
            continue
        same = f" (= {r['same_as']})" if r.get("same_as") else ""
        lo, hi = r.get("interval", (0.0, 1.0))
        cell = f" {_fmt(r.get('drawn_per_item'), 1)} |" if drawn else ""
        lines.append(
            f"| {r['config']}{same} | {r['items']} | {r['accuracy']:.3f} ({r['correct']}/{r['items']}) "
            f"[{lo:.2f}, {hi:.2f}] | {_test(r.get('vs_single'))} | {_test(r.get('vs_vote'))} | {_fmt(r['quality'])} "
            f"| {_fmt(r.get('oracle'))} | {_fmt(r['diversity'], 2)} |{cell} {r['calls_per_item']:.1f} "
            f"| {r['input_tokens_per_item']:.0f} | {r['output_tokens_per_item']:.0f} | {r['errors']} |"
        )
    return lines


def _fixed_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Seq stopped early against the same seq run to its last sample."""
    lines: list[str] = []
    by_name = {r["config"]: r for r in rows}
    for r in rows:
        base = by_name.get(_fixed_of(r["config"]))
        if r.get("vs_fixed") and base and base.get("calls_per_item"):
            fewer = 1 - r["calls_per_item"] / base["calls_per_item"]
            lines += ["", (
                f"*{r['config']}* against *{base['config']}* on the same samples: {r['calls_per_item']:.2f} calls "
                f"per item against {base['calls_per_item']:.2f} ({fewer:.1%} fewer), accuracy {r['accuracy']:.3f} "
                f"against {base['accuracy']:.3f} (95% interval of the latter [{base['interval'][0]:.2f}, "
                f"{base['interval'][1]:.2f}]); paired: {_test(r['vs_fixed'])}."
            )]
    return lines


def _cut_notes(report: dict[str, Any]) -> list[str]:
    """How many drawn and aggregator replies reached max_tokens."""
    meta, lines = report["meta"], []
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
    return lines


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

