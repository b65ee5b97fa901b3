"""How far an item's samples agree, what that predicts, and where `select` looks: report figures.

An ensemble record holds the item's samples (`proposals`) and its `answer`. Its agreement
is the share of its successful samples whose short answer (the task's `answer_of`, what
`vote` counts) is the answer's short answer: for `vote` the majority's share, for
`synthesize` and `select` how many samples back what the aggregator returned. Records
written by newer runners carry it as `agreement`; for older ones it is computed here from
the same texts. Per configuration the report gives accuracy per band of the share, the
AUROC of the share as a predictor of a right answer, and the coverage–accuracy curve of
answering only when the share reaches a threshold. For `select`, it counts which shown
position the judge picked (`chosen` against `order`, the order the samples were shown in).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from statistics import mean
from typing import Any

from selfmoa.evals.stats import auroc, bootstrap_interval
from selfmoa.nodes.answers import AnswerOf, normalized

BUCKETS: tuple[tuple[str, float, bool], ...] = (
    ("1", 1.0, True), ("[2/3, 1)", 2 / 3, True), ("(1/2, 2/3)", 1 / 2, False), ("(1/3, 1/2]", 1 / 3, False),
    ("(0, 1/3]", 0.0, False),
)
"""Fixed bands of the share, highest first: (label, lower bound, whether the bound is in the band).
A share in none of them is 0: no sample gives the answer (the "0" band)."""
NO_SAMPLE = "0"
THRESHOLDS: tuple[tuple[str, float], ...] = (("share = 1", 1.0), ("share ≥ 2/3", 2 / 3), ("share ≥ 1/2", 1 / 2),
                                             ("share ≥ 1/3", 1 / 3), ("all items", 0.0))
"""Points of the coverage–accuracy curve the Markdown table shows: answer only when share ≥ t."""
REPS, SEED = 2000, 0
"""Bootstrap resamples of the items for the AUROC's interval, and their fixed seed."""
_EPS = 1e-9  # shares are fractions such as 4/6: compare them with bounds such as 2/3 safely


def agreement(record: dict[str, Any], answer_of: AnswerOf | None = None) -> dict[str, Any]:
    """The record's `agreement`, or the same computed from its proposals and answer.

    `counts`: successful samples per short answer (first seen first); `samples`: how many
    samples succeeded; `answer`: the answer's short answer; `share`: the fraction of the
    successful samples that give it, None when none does (or the answer has none).
    Without `answer_of` a short answer is the whole text, normalised.

    Example:
        >>> from selfmoa.nodes.answers import number
        >>> rec = {"answer": "so 5", "proposals": [{"text": "x=4", "error": None}, {"text": "it is 5", "error": None},
        ...        {"text": "", "error": "time-out"}, {"text": "5 it is", "error": None}]}
        >>> agreement(rec, number)
        {'share': 0.6666666666666666, 'answer': '5', 'counts': {'4': 1, '5': 2}, 'samples': 3}
        >>> agreement({**rec, "answer": "7"}, number)["share"] is None
        True
    """
    if record.get("agreement") is not None:
        return record["agreement"]
    read = answer_of or normalized
    texts = [p["text"] for p in record.get("proposals") or [] if not p.get("error")]
    counts: dict[str, int] = {}
    for text in texts:
        short = read(text) if text else None
        if short is not None:
            counts[short] = counts.get(short, 0) + 1
    answer = read(record["answer"]) if record.get("answer") and not record.get("error") else None
    share = counts[answer] / len(texts) if answer is not None and answer in counts else None
    return {"share": share, "answer": answer, "counts": counts, "samples": len(texts)}


def bucket_of(share: float | None) -> str:
    """The band of `BUCKETS` a share falls in; "0" for None or 0 (no sample gives the answer).

    Example:
        >>> [bucket_of(s) for s in (1.0, 5 / 6, 4 / 6, 0.6, 0.5, 2 / 6, 1 / 6, None)]
        ['1', '[2/3, 1)', '[2/3, 1)', '(1/2, 2/3)', '(1/3, 1/2]', '(0, 1/3]', '(0, 1/3]', '0']
    """
    for label, low, inclusive in BUCKETS:
        if share is not None and (share >= low - _EPS if inclusive else share > low + _EPS):
            return label
    return NO_SAMPLE


def coverage_curve(pairs: Sequence[tuple[float, bool]]) -> list[dict[str, Any]]:
    """Answering only when the share reaches t, for each share t that occurs (highest first).

    `pairs` are (share, right) per item. `coverage`: the fraction of items with share ≥ t;
    `accuracy`: the fraction of those that are right.

    Example:
        >>> for point in coverage_curve([(1.0, True), (0.5, True), (0.5, False), (0.0, False)]):
        ...     print(point)
        {'threshold': 1.0, 'items': 1, 'coverage': 0.25, 'accuracy': 1.0}
        {'threshold': 0.5, 'items': 3, 'coverage': 0.75, 'accuracy': 0.6666666666666666}
        {'threshold': 0.0, 'items': 4, 'coverage': 1.0, 'accuracy': 0.5}
    """
    return [coverage_at(pairs, t) for t in sorted({s for s, _ in pairs}, reverse=True)]


def coverage_at(pairs: Sequence[tuple[float, bool]], threshold: float) -> dict[str, Any]:
    """One point of `coverage_curve`: the items with share ≥ `threshold`; accuracy None when there are none."""
    kept = [right for share, right in pairs if share >= threshold - _EPS]
    return {"threshold": threshold, "items": len(kept), "coverage": len(kept) / len(pairs) if pairs else 0.0,
            "accuracy": sum(kept) / len(kept) if kept else None}


def _auroc_of(pairs: Sequence[tuple[float, bool]]) -> float | None:
    return auroc([s for s, _ in pairs], [y for _, y in pairs])


def agreement_figures(records: Sequence[dict[str, Any]], answer_of: AnswerOf | None = None) -> dict[str, Any] | None:
    """Agreement against accuracy for one configuration; None unless some item has 2 samples or more.

    An answer that no sample gives counts as share 0: nothing backs it. Returns the items,
    the mean share, right/items per band of `BUCKETS`, the AUROC of the share as a predictor
    of a right answer with its 95% percentile bootstrap interval over the items (`REPS`
    resamples, seed `SEED`), and the coverage–accuracy curve.
    """
    if not any(len(r.get("proposals") or []) >= 2 for r in records):
        return None
    pairs = [(agreement(r, answer_of)["share"] or 0.0, bool(r["correct"])) for r in records]
    bands = [bucket_of(s) for s, _ in pairs]
    buckets = [{"bucket": label, "items": bands.count(label),
                "correct": sum(y for (_, y), band in zip(pairs, bands, strict=True) if band == label)}
               for label in [*(b[0] for b in BUCKETS), NO_SAMPLE]]
    interval = bootstrap_interval(_auroc_of, pairs, reps=REPS, seed=SEED)
    return {"items": len(pairs), "mean_share": mean(s for s, _ in pairs), "buckets": buckets, "auroc": _auroc_of(pairs),
            "auroc_interval": list(interval) if interval else None, "coverage": coverage_curve(pairs)}


def position_of(record: dict[str, Any]) -> tuple[int, int] | None:
    """(position of the chosen sample among those shown, counting from 1; how many were shown).

    The samples were shown in `order` (sample indices), or when the record has none in
    their own order, failed samples left out. None for a record without a choice, and for a
    sliding window (several aggregation steps: the last step's candidates are not the samples).

    Example:
        >>> rec = {"chosen": 2, "aggregations": 1, "proposals": [{"sample": i, "error": None} for i in range(4)]}
        >>> position_of(rec), position_of({**rec, "order": [2, 0, 3, 1]}), position_of({**rec, "aggregations": 2})
        ((3, 4), (1, 4), None)
        >>> position_of({**rec, "order": [[1, 3, 2, 0], [0, 2, 3, 1]], "picks": [3, 1]})  # the first judge call's pick
        (2, 4)
    """
    chosen = record.get("chosen")
    if chosen is None or record.get("aggregations", 1) != 1:
        return None
    order = record.get("order")
    if order and isinstance(order[0], list):  # a run's record: one shown order per judge call, its pick in `picks`
        order, chosen = order[0], (record.get("picks") or [chosen])[0]
    order = order or [p.get("sample", i) for i, p in enumerate(record.get("proposals") or []) if not p.get("error")]
    return (order.index(chosen) + 1, len(order)) if chosen in order else None


def position_picks(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """How often a `select` judge picked each shown position, and how right it was; None without choices.

    `picks[i]`: items on which position i + 1 was picked; `chance`: the mean of 1/shown,
    the rate of position 1 for a judge blind to order and content; `correct_first` and
    `correct_other`: right answers when position 1 was picked, and when another was.
    """
    found = [(pos, shown, bool(r["correct"])) for r in records if (ps := position_of(r)) for pos, shown in [ps]]
    if not found:
        return None
    picks = [0] * max(shown for _, shown, _ in found)
    for pos, _, _ in found:
        picks[pos - 1] += 1
    return {"items": len(found), "picks": picks, "first_rate": picks[0] / len(found),
            "chance": mean(1 / shown for _, shown, _ in found),
            "correct_first": sum(y for pos, _, y in found if pos == 1),
            "correct_other": sum(y for pos, _, y in found if pos != 1)}


def _rows_with(report: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The rows with figures under `key`, leaving out those that repeat another row's computation."""
    return [r for r in report["rows"] if r.get(key) and not r.get("same_as")]


def _ratio(right: int, n: int) -> str:
    return f"{right / n:.2f} ({right}/{n})" if n else "–"


def agreement_markdown(report: dict[str, Any]) -> list[str]:
    """The agreement section: accuracy per band of the share, the AUROC, the coverage–accuracy table."""
    rows = _rows_with(report, "agreement")
    if not rows:
        return []
    labels = [b for b in [*(b[0] for b in BUCKETS), NO_SAMPLE]
              if any(x["items"] for r in rows for x in r["agreement"]["buckets"] if x["bucket"] == b)]
    lines = [
        "", "**Agreement of the samples.** *share*: the fraction of an item's successful samples whose short "
        "answer (the task's, as `vote` reads it) is the configuration's answer's; for `vote` the majority's share; "
        "0 when no sample gives the answer (or the answer has no short answer). "
        f"Fixed bands of the share: {', '.join(b[0] for b in BUCKETS)} and 0 (empty bands left out). Per band: "
        "accuracy (right/items). AUROC: how well the share ranks the right answers above the wrong ones (0.5 = "
        f"chance, ties count half), with a 95% percentile bootstrap interval over the items ({REPS:,} resamples, "
        f"seed {SEED}).", "",
        "| config | items | mean share | AUROC [95% CI] | " + " | ".join(f"share {b}" for b in labels) + " |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in labels) + " |",
    ]
    for r in rows:
        a = r["agreement"]
        cells = {b["bucket"]: _ratio(b["correct"], b["items"]) for b in a["buckets"]}
        lines.append(f"| {r['config']} | {a['items']} | {a['mean_share']:.2f} | {_auroc_text(a)} | "
                     + " | ".join(cells[b] for b in labels) + " |")
    lines += ["", "Answering only when the share reaches t (abstaining otherwise): coverage (the fraction of items "
              "answered) / accuracy on them; *all items* is the configuration as it is.", "",
              "| config | " + " | ".join(t for t, _ in THRESHOLDS) + " |",
              "| --- | " + " | ".join("---:" for _ in THRESHOLDS) + " |"]
    for r in rows:
        pairs = [coverage_of(r["agreement"], t) for _, t in THRESHOLDS]
        lines.append(f"| {r['config']} | " + " | ".join(f"{c:.2f} / {_fmt(acc)}" for c, acc in pairs) + " |")
    return lines


def coverage_of(figures: dict[str, Any], threshold: float) -> tuple[float, float | None]:
    """(coverage, accuracy) of answering when the share is at least `threshold`, from the stored curve.

    Example:
        >>> figures = {"coverage": [{"threshold": 1.0, "coverage": 0.25, "accuracy": 1.0},
        ...                         {"threshold": 0.5, "coverage": 0.75, "accuracy": 0.5}]}
        >>> coverage_of(figures, 2 / 3), coverage_of(figures, 0.5), coverage_of(figures, 1.5)
        ((0.25, 1.0), (0.75, 0.5), (0.0, None))
    """
    kept = [p for p in figures["coverage"] if p["threshold"] >= threshold - _EPS]
    last = min(kept, key=lambda p: p["threshold"]) if kept else None
    return (last["coverage"], last["accuracy"]) if last else (0.0, None)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _auroc_text(figures: dict[str, Any]) -> str:
    if figures["auroc"] is None:
        return "undefined (all right or all wrong)"
    ci = figures.get("auroc_interval")
    return f"{figures['auroc']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def position_markdown(report: dict[str, Any]) -> list[str]:
    """The section on which shown position `select` picked, per one-shot select configuration."""
    rows = _rows_with(report, "position")
    if not rows:
        return []
    lines = ["", "**Which position `select` picks.** The position (1 = shown first) of the sample the judge named, "
             "over the items with one aggregation step (not a sliding window's); *chance*: the rate of position 1 "
             "for a judge blind to order (1/k). Accuracy when position 1 was picked and when another was.", "",
             "| config | items | position 1 | chance | picks by position 1, 2, … | right when 1 | right otherwise |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        p = r["position"]
        first, n = p["picks"][0], p["items"]
        lines.append(f"| {r['config']} | {n} | {p['first_rate']:.2f} ({first}/{n}) | {p['chance']:.2f} | "
                     f"{', '.join(map(str, p['picks']))} | {_ratio(p['correct_first'], first)} | "
                     f"{_ratio(p['correct_other'], n - first)} |")
    return lines


def agreement_findings(report: dict[str, Any]) -> list[str]:
    """Sentences for "What this shows": what agreement predicts, and where `select` looks."""
    out = []
    rows = _rows_with(report, "agreement")
    votes = [r for r in rows if r["config"].endswith(" vote")] or rows
    if votes:  # the vote of the most samples, Self-MoA's first: the majority's share as a confidence
        r = max(votes, key=lambda r: (r["config"].startswith("self-moa"), r["agreement"]["items"], _k(r["config"])))
        a = r["agreement"]
        said = [f"AUROC {_auroc_text(a)}"]
        for name, bands in (("every sample agreed", ("1",)), ("at most half agreed", ("(1/3, 1/2]", "(0, 1/3]", "0"))):
            chosen = [b for b in a["buckets"] if b["bucket"] in bands]
            n = sum(b["items"] for b in chosen)
            if n:
                said.append(f"items on which {name} were right {sum(b['correct'] for b in chosen)} of {n}")
        out.append(f"The samples' agreement as a predictor of whether {r['config']} is right: {'; '.join(said)}.")
    picks = _rows_with(report, "position")
    if picks:
        out.append(f"How often select picked the sample shown first: {'; '.join(map(_first_picks, picks))}.")
    return out


def _k(config: str) -> int:
    found = re.search(r"\bk=(\d+)", config)
    return int(found.group(1)) if found else 0


def _first_picks(row: dict[str, Any]) -> str:
    p = row["position"]
    first, other = p["picks"][0], p["items"] - p["picks"][0]
    right_first = _fmt(p["correct_first"] / first if first else None)
    right_other = _fmt(p["correct_other"] / other if other else None)
    return (f"{row['config']} {p['first_rate']:.0%} (chance {p['chance']:.0%}; right on {right_first} of those"
            + (f", {right_other} otherwise)" if other else ")"))
