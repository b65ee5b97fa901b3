"""The `selfmoa` command line, on the fake model (registered as a provider)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from selfmoa import model_providers
from selfmoa.cli import main
from selfmoa.testing import FakeChatModel

MADE: dict[str, FakeChatModel] = {}


def _fake(name: str, **kwargs) -> FakeChatModel:
    model = FakeChatModel(model=name or "clifake")
    MADE[name] = model
    MADE[f"{name}:kwargs"] = kwargs  # type: ignore[assignment]
    return model




@pytest.fixture(autouse=True, scope="module")
def _clifake_provider():
    with model_providers({"clifake": _fake}):
        yield


def test_run_prints_the_answer_and_progress(capsys):
    assert main(["run", "--model", "clifake:a", "--samples", "3", "What is 17*3?"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().startswith("a answer") and out.strip().endswith("What is 17*3?")
    assert err.count("proposal ") == 3 and "layer 1: 3 ok, 0 failed" in err and "done in" in err
    assert MADE["a:kwargs"] == {"max_tokens": 512}


def test_json_output_has_answer_proposals_usage_and_timings(capsys):
    assert main(["run", "--model", "clifake:b", "--samples", "4", "--seed", "5", "--json", "Hi"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"answer", "proposals", "aggregations", "usage", "warnings", "agreement", "timings"}
    assert report["agreement"]["samples"] == 4 and sum(report["agreement"]["counts"].values()) == 4
    assert len(report["proposals"]) == 4 and report["usage"]["total"]["calls"] == 5
    assert sorted(c.seed for c in MADE["b"].calls if c.role == "proposer") == [5, 6, 7, 8]
    timings = report["timings"]
    assert timings["total_s"] == pytest.approx(timings["model_start_s"] + timings["run_s"], abs=0.002)
    assert 0 < timings["run_s"] < 30


def test_stream_prints_tokens_then_newline(capsys):
    assert main(["run", "--model", "clifake:c", "--samples", "2", "--stream", "-q", "Hi"]) == 0
    out, err = capsys.readouterr()
    final = [c for c in MADE["c"].calls if c.role == "aggregator"][0].replies[0]
    assert out == final + "\n" and err == ""


def test_methods_seq_and_moa(capsys):
    assert main(["run", "--method", "seq", "--model", "clifake:d", "--samples", "9", "--json", "Hi"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["sample_ids"] for s in report["aggregations"]] == [[0, 1, 2, 3, 4, 5], [6, 7, 8]]
    args = ["run", "--method", "moa", "--model", "clifake:e", "--model", "clifake:f", "--layers", "3", "--json", "Hi"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(p["layer"], p["model"]) for p in report["proposals"]][:2] == [(1, "e"), (1, "f")]
    assert len(report["proposals"]) == 6


def test_spec_file(tmp_path, capsys):
    spec = tmp_path / "h.yaml"
    spec.write_text(
        "layers:\n  - - {model: 'clifake:g', samples: 2}\n    - {model: 'clifake:h', samples: 2}\naggregator: {model: 'clifake:h'}\n"
    )
    assert main(["run", "--spec", str(spec), "--max-tokens", "64", "--json", "Hi"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [p["model"] for p in report["proposals"]] == ["g", "g", "h", "h"]
    assert report["aggregations"][0]["model"] == "h"
    assert MADE["g:kwargs"] == {"max_tokens": 64}


def test_show_graph_prints_mermaid_without_calling_a_model(capsys):
    MADE.pop("z", None)
    assert main(["run", "--model", "clifake:z", "--show-graph", "Hi"]) == 0
    out = capsys.readouterr().out
    assert "graph TD;" in out and "aggregate" in out
    assert "z" not in MADE, "no model client is made just to draw the graph"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--samples", "0", "--model", "clifake:x", "Hi"], "argument --samples: must be an integer of at least 1"),
        (["run", "--method", "seq", "--window", "3", "--reserved", "3", "--model", "clifake:x", "Hi"], "reserved"),
        (["run", "--model", "clifake:x", "--model", "clifake:y", "Hi"], "takes one --model"),
        (["run", "--model", "clifake:x", "   "], "the prompt is empty"),
        (["run", "--spec", "/nonexistent/spec.yaml", "Hi"], "cannot read spec file"),
        (["run", "--model", "nosuchprovider:m", "Hi"], "model 'nosuchprovider:m'"),
        (["run", "--method", "moa", "--layers", "0", "--model", "clifake:x", "Hi"], "argument --layers: must be an integer of at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    MADE.pop("x", None)
    assert main(argv) == 2
    assert "x" not in MADE, "bad input is reported before any model client is made"
    err = capsys.readouterr().err
    assert err.startswith("selfmoa: error: ") and message in err
    assert err.count("\n") == 1


def test_failures_in_a_run_are_one_line(capsys, providers):
    providers(clibroken=lambda name, **kw: FakeChatModel(model="broken", fail_rate=1.0))
    assert main(["run", "--model", "clibroken:x", "--samples", "2", "Hi"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("selfmoa: error: only 0 of 2 proposals of layer 1 succeeded")


def test_console_script_exits_non_zero_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [[openai:x]]\nunknown_key: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "selfmoa.cli", "run", "--spec", str(bad), "Hi"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr == "selfmoa: error: unknown key 'unknown_key' in spec; remove it or check its spelling\n"
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--window", "4", "Hi"], "--window is not used by --method self-moa; drop it, or add --method seq"),
        (["run", "--window", "4", "--reserved", "2", "Hi"],
         "--window, --reserved are not used by --method self-moa; drop them, or add --method seq"),
        (["run", "--layers", "3", "Hi"], "--layers is not used by --method self-moa; drop it, or add --method moa"),
        (["run", "--method", "seq", "--layers", "3", "Hi"], "--layers is not used by --method seq; drop it, or add --method moa"),
        (["run", "--method", "moa", "--samples", "4", "--window", "4", "Hi"],
         "--samples, --window are not used by --method moa; drop them, or add --method self-moa or seq"),
        (["run", "--spec", "s.yaml", "--samples", "4", "--temperature", "0.2", "Hi"],
         "--samples, --temperature are not used with --spec, whose file sets the method, models and their settings; "
         "drop them, or set them in the spec file"),
        (["run", "--spec", "s.yaml", "--model", "clifake:x", "Hi"], "--model is not used with --spec"),
        (["run", "--method", "seq", "--aggregate", "vote", "--model", "clifake:x", "Hi"],
         "--aggregate vote takes all samples at once and cannot slide a window; use --aggregate synthesize or select"),
    ],
)
def test_a_flag_the_method_does_not_use_is_an_error(argv, message, capsys):
    MADE.pop("x", None)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"selfmoa: error: {message}\n" or (err.startswith(f"selfmoa: error: {message}") and err.count("\n") == 1)
    assert "x" not in MADE


def test_flags_the_method_uses_are_taken_and_defaults_fill_the_rest(capsys):
    assert main(["run", "--method", "seq", "--model", "clifake:s", "--samples", "5", "--window", "4", "--reserved", "2",
                 "--json", "Hi"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["sample_ids"] for s in report["aggregations"]] == [[0, 1, 2, 3], [4]]
    assert main(["run", "--method", "moa", "--model", "clifake:m", "--json", "Hi"]) == 0  # default 2 layers
    assert [p["layer"] for p in json.loads(capsys.readouterr().out)["proposals"]] == [1, 2]
    assert main(["run", "--model", "clifake:n", "--json", "Hi"]) == 0  # default 6 samples at temperature 0.7
    proposals = json.loads(capsys.readouterr().out)["proposals"]
    assert len(proposals) == 6
    assert {c.temperature for c in MADE["n"].calls if c.role == "proposer"} == {0.7}


def test_a_spec_error_names_every_problem_up_to_three(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [[{model: 'clifake:x', samples: 0}]]\ntemprature: 1\nseed: x\nmin_proposals: 0\n")
    assert main(["run", "--spec", str(bad), "Hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("selfmoa: error: 4 problems in spec: (1) ")
    assert "'layers.0.proposers.0.samples'" in err and "(2) " in err and "(3) " in err and err.endswith(" (and 1 more)\n")


def test_a_spec_that_pauses_for_review_is_refused_before_any_call(tmp_path, capsys):
    spec = tmp_path / "review.yaml"
    spec.write_text("layers: [[{model: 'clifake:reviewed', samples: 2}]]\nreview: true\n")
    assert main(["run", "--spec", str(spec), "Hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "review pauses the run" in err and "set review to false" in err
    assert "reviewed" not in MADE or MADE["reviewed"].calls == []  # models are made on first use


def test_done_in_shows_the_model_start_apart(capsys, monkeypatch, providers):
    import time as time_module

    def slow(name: str, **kwargs) -> FakeChatModel:
        time_module.sleep(0.3)  # stands for joining and starting an embedded model
        return FakeChatModel(model="slow")

    providers(clislow=slow)
    assert main(["run", "--model", "clislow:x", "--samples", "2", "Hi"]) == 0
    line = capsys.readouterr().err.splitlines()[-1]
    match = re.match(r"done in (\d+\.\d)s \((\d+\.\d)s model start, (\d+\.\d)s run\): 3 calls", line)
    assert match, line
    total, start, run = map(float, match.groups())
    assert start >= 0.3 and abs(total - start - run) <= 0.11
    assert main(["run", "--model", "clislow:x", "--samples", "2", "--json", "Hi"]) == 0
    timings = json.loads(capsys.readouterr().out)["timings"]
    assert set(timings) == {"total_s", "model_start_s", "run_s"} and timings["model_start_s"] >= 0.3
