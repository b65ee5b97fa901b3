"""The eval report's agreement, coverage, Holm and position figures on small hand-made records.

Every expected value below is worked out by hand in the comments, not read off the code.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction

import pytest
from helpers import require

require("numpy", reason="needs the 'eval' extra")

from selfmoa.evals import cli as eval_cli  # noqa: E402
from selfmoa.evals.agreement import agreement, agreement_figures, coverage_of, position_picks  # noqa: E402
from selfmoa.evals.metrics import summarize  # noqa: E402
from selfmoa.evals.report import build_report, findings, markdown, write_report  # noqa: E402
from selfmoa.evals.stats import auroc, bootstrap_interval, holm  # noqa: E402
from selfmoa.nodes.answers import number  # noqa: E402

META = {"task": "t", "models": ["m"], "samples": 4, "temperature": 0.7, "max_tokens": 64, "seed": 0,
        "command": "selfmoa eval ...", "machine": "test", "date": "today", "elapsed_s": 0.0}


def _record(item: int, samples: list[str], answer: str, correct: bool, **extra) -> dict:
    proposals = [{"model": "m", "sample": i, "text": t, "correct": None, "error": None} for i, t in enumerate(samples)]
    return {"item": f"i{item}", "key": "k", "answer": answer, "correct": correct, "proposals": proposals,
            "usage": {"calls": len(samples) + 1, "input_tokens": 10, "output_tokens": 5}, "wall_s": 0.0,
            "error": None, **extra}


# Seven items of k = 4 samples (numbers as answers). Shares of the answer, worked by hand:
#   i0: 5 5 5 5, answer 5, right   -> 4/4 = 1
#   i1: 5 5 5 4, answer 5, right   -> 3/4
#   i2: 5 5 4 4, answer 5, wrong   -> 2/4 = 1/2
#   i3: 5 4 3 2, answer 5, wrong   -> 1/4
#   i4: 5 5 5 4, answer 5, wrong   -> 3/4
#   i5: 1 2 3 4, answer 4, right   -> 1/4
#   i6: 1 2 3 4, answer 7, wrong   -> no sample gives 7: share None, counted as 0
SEVEN = [
    (["5", "5", "5", "5"], "5", True), (["5", "5", "5", "4"], "5", True), (["5", "5", "4", "4"], "5", False),
    (["5", "4", "3", "2"], "5", False), (["5", "5", "5", "4"], "5", False), (["1", "2", "3", "4"], "4", True),
    (["1", "2", "3", "4"], "7", False),
]


def _seven() -> list[dict]:
    return [_record(i, [f"so {x}" for x in s], f"Answer: {a}", ok) for i, (s, a, ok) in enumerate(SEVEN)]


def test_agreement_of_a_record_reads_short_answers_and_leaves_out_failed_samples():
    rec = _record(0, ["x = 5", "so 5", "it is 4", ""], "Answer: 5", True)
    rec["proposals"][3]["error"] = "time-out"
    # 3 successful samples, two of them say 5: share 2/3.
    assert agreement(rec, number) == {"share": 2 / 3, "answer": "5", "counts": {"5": 2, "4": 1}, "samples": 3}
    # Without an extractor the whole texts count: "Answer: 5" is none of them.
    assert agreement(rec)["share"] is None and agreement(rec)["counts"] == {"x = 5": 1, "so 5": 1, "it is 4": 1}
    # A record that carries its agreement is taken as it is.
    stored = {"share": 0.25, "answer": "9", "counts": {"9": 1}, "samples": 4}
    assert agreement({**rec, "agreement": stored}, number) is stored
    # A failed aggregation has no answer to agree with.
    assert agreement({**rec, "error": "boom"}, number)["share"] is None


def test_buckets_auroc_and_coverage_of_one_configuration():
    figures = agreement_figures(_seven(), number)
    assert figures is not None
    bands = {b["bucket"]: (b["correct"], b["items"]) for b in figures["buckets"]}
    # 1: i0 (right); [2/3, 1): i1 right, i4 wrong; (1/2, 2/3): none; (1/3, 1/2]: i2 wrong;
    # (0, 1/3]: i3 wrong, i5 right; 0: i6 wrong.
    assert bands == {"1": (1, 1), "[2/3, 1)": (1, 2), "(1/2, 2/3)": (0, 0), "(1/3, 1/2]": (0, 1), "(0, 1/3]": (1, 2),
                     "0": (0, 1)}
    # Right shares {1, 3/4, 1/4} against wrong {1/2, 1/4, 3/4, 0}: 1 beats all 4; 3/4 beats 3 and
    # ties 1 (3.5); 1/4 beats 0 and ties 1/4 (1.5): 9 of 12 pairs.
    assert figures["auroc"] == pytest.approx(9 / 12)
    assert figures["mean_share"] == pytest.approx((1 + 0.75 + 0.5 + 0.25 + 0.75 + 0.25 + 0) / 7)
    lo, hi = figures["auroc_interval"]
    assert 0 <= lo <= 9 / 12 <= hi <= 1
    # Thresholds at each share, highest first: items kept and right among them.
    curve = [(Fraction(p["threshold"]).limit_denominator(8), p["items"], p["accuracy"]) for p in figures["coverage"]]
    assert curve == [(1, 1, 1.0), (Fraction(3, 4), 3, pytest.approx(2 / 3)), (Fraction(1, 2), 4, 0.5),
                     (Fraction(1, 4), 6, 0.5), (0, 7, pytest.approx(3 / 7))]
    assert [p["coverage"] for p in figures["coverage"]] == pytest.approx([1 / 7, 3 / 7, 4 / 7, 6 / 7, 1.0])
    # The Markdown points: share >= 2/3 keeps i0, i1, i4; >= 1/3 the same as >= 1/2 (no share between).
    assert coverage_of(figures, 2 / 3) == (pytest.approx(3 / 7), pytest.approx(2 / 3))
    assert coverage_of(figures, 1 / 3) == (pytest.approx(4 / 7), 0.5)


def test_agreement_needs_two_samples_and_the_interval_is_reproducible():
    assert agreement_figures([_record(0, ["5"], "5", True)], number) is None
    assert agreement_figures([{**_record(0, [], "5", True)}], number) is None  # single: no samples
    pairs = [(1.0, True), (0.5, False), (0.75, True), (0.25, False)] * 5
    one = bootstrap_interval(lambda xs: auroc(*zip(*xs, strict=True)), pairs, reps=300, seed=3)
    assert one == bootstrap_interval(lambda xs: auroc(*zip(*xs, strict=True)), pairs, reps=300, seed=3)
    assert one == (1.0, 1.0)  # every resample with both classes ranks all right answers first


def test_auroc_counts_ties_as_half():
    # 2 right (0.9, 0.5) and 2 wrong (0.5, 0.1): 0.9 beats both, 0.5 ties one and beats one: 3.5 of 4.
    assert auroc([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == 3.5 / 4
    assert auroc([0.2, 0.8], [True, False]) == 0.0
    assert auroc([0.3, 0.3, 0.3], [True, False, False]) == 0.5


def test_holm_steps_down_and_stays_monotone():
    # Sorted 0.001, 0.01, 0.02, 0.5: times 4, 3, 2, 1 = 0.004, 0.03, 0.04, 0.5.
    assert holm([0.02, 0.5, 0.001, 0.01]) == pytest.approx([0.04, 0.5, 0.004, 0.03])
    # 0.04 * 2 = 0.08 > 0.05 * 1: the second keeps the first's 0.08, never less.
    assert holm([0.04, 0.05]) == pytest.approx([0.08, 0.08])


def _paired_configs() -> dict[str, list[dict]]:
    """12 items. single right on 0-3; synthesize on all; select on 0-9; vote on 4-11."""
    right = {"single": range(4), "self-moa k=2 synthesize": range(12), "self-moa k=2 select": range(10),
             "self-moa k=2 vote": range(4, 12)}
    by_config = {}
    for name, items in right.items():
        samples = [] if name == "single" else ["so 5", "so 5"]
        by_config[name] = [{**_record(i, samples, "5", i in items), "key": name} for i in range(12)]
    # seq with every sample in one window is the same computation as self-moa: same keys.
    by_config["seq k=2 synthesize"] = [dict(r) for r in by_config["self-moa k=2 synthesize"]]
    return by_config


def test_holm_adjusts_each_family_and_a_repeated_computation_counts_once():
    report = build_report(_paired_configs(), META, None, answer_of=number)
    rows = {r["config"]: r for r in report["rows"]}
    # Against single: synthesize +8/-0, p = 2/2^8 = 0.0078125; select +6/-0, p = 2/2^6 = 0.03125;
    # vote +8/-4, p = 2·(1+12+66+220+495)/2^12 = 0.387695...; seq repeats synthesize, so m = 3.
    # Holm: 3·0.0078125 = 0.0234375; max(that, 2·0.03125) = 0.0625; max(0.0625, 0.387695) = 0.387695.
    vs_single = {name: (rows[name]["vs_single"]["p"], rows[name]["vs_single"]["p_holm"])
                 for name in ("self-moa k=2 synthesize", "self-moa k=2 select", "self-moa k=2 vote")}
    assert vs_single == {"self-moa k=2 synthesize": (0.0078125, 0.0234375), "self-moa k=2 select": (0.03125, 0.0625),
                         "self-moa k=2 vote": (pytest.approx(1588 / 4096), pytest.approx(1588 / 4096))}
    assert rows["seq k=2 synthesize"]["same_as"] == "self-moa k=2 synthesize"
    assert rows["seq k=2 synthesize"]["vs_single"]["p_holm"] == 0.0234375
    # Against vote (m = 2): synthesize +4/-0, p = 0.125 -> 0.25; select +4/-2, p = 2·22/64 = 0.6875 -> 0.6875.
    assert rows["self-moa k=2 synthesize"]["vs_vote"]["p_holm"] == 0.25
    assert rows["self-moa k=2 select"]["vs_vote"]["p_holm"] == 0.6875
    table = markdown(report)
    assert re.search(r"\| \+8/−0, p=0\.0078 \(Holm 0\.023\), Δ [^|]+\| \+4/−0, p=0\.12 \(Holm 0\.25\), Δ [^|]+\|", table)
    said = findings(report)
    assert ("Holm-adjusted over the 3 comparisons with single, p < 0.05 remains for: self-moa k=2 synthesize."
            in said)
    saved = json.loads(json.dumps(report))  # the JSON holds the adjusted p-values too
    assert saved["rows"][2]["vs_single"]["p_holm"] == 0.0625


def test_build_report_reads_short_answers_with_the_tasks_extractor():
    records = [{**_record(i, ["x = 5", "so 5", "5 it is"], "Answer: 5", True), "key": "v"} for i in range(2)]
    records.append({**_record(2, ["x = 4", "so 5", "5"], "Answer: 4", False), "key": "v"})
    by_config = {"self-moa k=3 vote": records}
    bands = {b["bucket"]: (b["correct"], b["items"])
             for b in build_report(by_config, META, None, answer_of=number)["rows"][0]["agreement"]["buckets"]}
    # With numbers: items 0-1 unanimous (3/3), right; item 2 one of three says 4: (0, 1/3], wrong.
    assert bands["1"] == (2, 2) and bands["(0, 1/3]"] == (0, 1)
    # Whole texts: no sample is "answer: 5" (or "answer: 4"), so every share is 0, and all tie.
    plain = build_report(by_config, META, None)["rows"][0]["agreement"]
    assert {b["bucket"]: b["items"] for b in plain["buckets"]}["0"] == 3 and plain["auroc"] == 0.5


def test_the_cli_gives_the_report_the_tasks_extractor(monkeypatch, tmp_path):
    seen = {}

    def capture(by_config, meta, embed, answer_of=None):
        seen["answer_of"] = answer_of
        raise SystemExit(0)

    monkeypatch.setattr(eval_cli, "run_eval", lambda *args, **kwargs: {})
    monkeypatch.setattr(eval_cli, "build_report", capture)
    monkeypatch.setattr(eval_cli, "load_draws", lambda out: {})
    args = eval_cli.argparse.Namespace(
        task="gsm8k", methods="self-moa", models="m", limit=1, skip=0, samples=2, samples_sweep=None, temperature=0.7,
        max_tokens=None, seed=0, window=4, reserved=2, threads=None, aggregations="vote", patience=None, workers=1,
        shard=None, out=str(tmp_path), rescore=False, quiet=True, no_diversity=True, report="results", no_plots=True,
        adaptive=None, select_orders="given")
    with pytest.raises(SystemExit):
        eval_cli.eval_main(args)
    assert seen["answer_of"] is eval_cli.get_task("gsm8k").answer_of


def test_position_picks_follow_the_shown_order():
    def rec(chosen, correct, order=None, failed=(), steps=1):
        r = _record(0, ["a", "b", "c"], "a", correct, chosen=chosen, aggregations=steps)
        for i in failed:
            r["proposals"][i]["error"] = "x"
        return {**r, "order": order} if order is not None else r

    records = [
        rec(2, True, order=[2, 0, 1]),  # shown first: position 1, right
        rec(0, False),  # natural order: position 1, wrong
        rec(1, True, order=[0, 2, 1]),  # position 3, right
        rec(1, False, failed=[0]),  # sample 0 failed: shown [1, 2], position 1 of 2, wrong
        rec(0, True, steps=2),  # a sliding window: not counted
    ]
    picks = position_picks(records)
    # 4 counted: positions 1, 1, 3, 1. Chance: (1/3 + 1/3 + 1/3 + 1/2) / 4 = 0.375.
    assert picks == {"items": 4, "picks": [3, 0, 1], "first_rate": 0.75, "chance": pytest.approx(0.375),
                     "correct_first": 1, "correct_other": 1}
    report = build_report({"self-moa k=3 select": [{**r, "item": f"i{i}"} for i, r in enumerate(records)]}, META, None)
    assert report["rows"][0]["position"]["picks"] == [3, 0, 1]  # the window record is counted by accuracy only
    table = markdown(report)
    assert "| self-moa k=3 select | 4 | 0.75 (3/4) | 0.38 | 3, 0, 1 | 0.33 (1/3) | 1.00 (1/1) |" in table
    assert "self-moa k=3 select 75% (chance 38%; right on 0.33 of those, 1.00 otherwise)" in table


def test_adaptive_records_show_samples_drawn_and_their_own_calls():
    # Two items: one stopped after 2 agreeing samples (2 calls), one drew all 6 and voted (6 calls).
    stopped = {**_record(0, ["5", "5"], "5", True, stopped="agreed", drawn=2), "key": "a",
               "usage": {"calls": 2, "input_tokens": 20, "output_tokens": 4}}
    full = {**_record(1, ["5", "4", "4", "3", "4", "5"], "4", False, stopped="samples", drawn=6), "key": "a",
            "usage": {"calls": 6, "input_tokens": 60, "output_tokens": 12}}
    fig = summarize([stopped, full])
    assert (fig["calls_per_item"], fig["input_tokens_per_item"], fig["drawn_per_item"]) == (4, 40, 4)
    by_config = {"single": [_record(0, [], "5", True), _record(1, [], "5", False)],
                 "self-moa k=6 vote adaptive": [stopped, full]}
    table = markdown(build_report(by_config, META, None, answer_of=number))
    assert "| samples drawn (mean) | calls/item |" in table
    assert "| single | 2 | 0.500 (1/2) [0.09, 0.91] | – | – | – | – | – | – | 1.0 |" in table
    assert "| 4.0 | 4.0 | 40 | 8 | 0 |" in table
    assert "samples drawn" not in markdown(build_report({"single": by_config["single"]}, META, None))


def test_the_sections_and_the_coverage_plot_are_written_and_rerender_from_json(tmp_path):
    by_config = {"single": [_record(i, [], "5", i < 3) for i in range(7)],
                 "self-moa k=4 vote": [{**r, "key": "v"} for r in _seven()]}
    report = build_report(by_config, META, None, answer_of=number)
    written = write_report(report, tmp_path)
    assert (tmp_path / "coverage.png").read_bytes()[:4] == b"\x89PNG" and tmp_path / "coverage.png" in written
    table = (tmp_path / "results.md").read_text()
    # Bands with items only: (1/2, 2/3) is empty and left out. AUROC 9/12 = 0.75.
    assert ("| config | items | mean share | AUROC [95% CI] | share 1 | share [2/3, 1) | share (1/3, 1/2] "
            "| share (0, 1/3] | share 0 |") in table
    assert "| self-moa k=4 vote | 7 | 0.50 | 0.75 [" in table
    assert "| 1.00 (1/1) | 0.50 (1/2) | 0.00 (0/1) | 0.50 (1/2) | 0.00 (0/1) |" in table
    # Coverage / accuracy at share = 1, >= 2/3, >= 1/2, >= 1/3, all: 1/7, 3/7, 4/7, 4/7, 7/7.
    assert "| self-moa k=4 vote | 0.14 / 1.00 | 0.43 / 0.67 | 0.57 / 0.50 | 0.57 / 0.50 | 1.00 / 0.43 |" in table
    # Unanimous 1 of 1; at most half agreeing: i2, i3, i5, i6, right on i5 only.
    assert ("The samples' agreement as a predictor of whether self-moa k=4 vote is right: AUROC 0.75 [" in table
            and "items on which every sample agreed were right 1 of 1; items on which at most half agreed were right "
                "1 of 4." in table)
    write_report(json.loads((tmp_path / "results.json").read_text()), tmp_path / "again", with_plots=True)
    assert (tmp_path / "again" / "results.md").read_text() == table
