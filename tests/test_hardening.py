"""Hardening (issue 5): the shared call limiter, over-long references, faults, bad input, secrets.

Faults already covered elsewhere (tests/test_failures.py): failure rates with a quorum on
Self-MoA, all proposers failing, the aggregator retried then failing with the proposals
kept, a hanging proposer cut by the timeout, empty replies. This file adds the limiter,
the guard against huge references, failure rates on MoA and Self-MoA-Seq, the bad-input
table, the secrets scan, and the Self-MoA-Seq schedule checked on real graph runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.memory import InMemorySaver

from selfmoa import (
    CallLimiter,
    MoASpec,
    SpecError,
    create_from_spec,
    create_moa,
    create_self_moa,
    create_self_moa_seq,
    model_providers,
)
from selfmoa.cli import main as cli_main
from selfmoa.graphs.schedule import window_calls
from selfmoa.nodes.calls import TRIM_MARK, trim_references
from selfmoa.testing import FakeChatModel

from helpers import ask, by_role, system_text

# --- the shared call limiter -------------------------------------------------------------------


def test_limiter_caps_calls_across_concurrent_sync_runs_of_several_graphs():
    model = FakeChatModel(latency=0.03)
    limiter = CallLimiter(3)
    graphs = [
        create_self_moa(model, samples=5, limiter=limiter).compile(),
        create_self_moa_seq(model, samples=7, window=4, reserved=2, limiter=limiter).compile(),
        create_moa([[model, model, model]] * 2, aggregator=model, limiter=limiter).compile(),
    ]
    results: list = []
    threads = [threading.Thread(target=lambda g=g: results.extend(g.batch([ask(), ask("Other?")]))) for g in graphs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(r["answer"] for r in results)
    assert model.peak_concurrency == 3
    assert limiter.in_flight == 0


async def test_limiter_caps_calls_across_concurrent_async_runs():
    model = FakeChatModel(latency=0.02)
    limiter = CallLimiter(4)
    one = create_self_moa(model, samples=6, limiter=limiter).compile()
    two = create_self_moa_seq(model, samples=9, window=4, reserved=2, limiter=limiter).compile()
    results = await asyncio.gather(one.abatch([ask()] * 5), two.abatch([ask()] * 3))
    assert sum(len(r) for r in results) == 8
    assert model.peak_concurrency == 4 and limiter.in_flight == 0


async def test_limiter_is_shared_between_event_loops_and_threads():
    model = FakeChatModel(latency=0.02)
    limiter = CallLimiter(2)
    graph = create_self_moa(model, samples=4, limiter=limiter).compile()
    thread = threading.Thread(target=lambda: asyncio.run(graph.ainvoke(ask())))
    thread.start()
    await asyncio.gather(graph.ainvoke(ask()), asyncio.to_thread(graph.invoke, ask()))
    thread.join()
    assert model.peak_concurrency == 2 and limiter.in_flight == 0


def test_limiter_slots_come_back_after_failures_retries_and_timeouts():
    limiter = CallLimiter(2)
    flaky = FakeChatModel(fail_rate=0.5)
    graph = create_self_moa(flaky, samples=6, aggregator=FakeChatModel(), retry_delay=0, limiter=limiter).compile()
    graph.invoke(ask())
    hanging = FakeChatModel(latency=2.0)
    graph = create_self_moa(hanging, samples=2, max_attempts=1, timeout=0.05, limiter=limiter).compile()
    with pytest.raises(Exception, match="took longer than"):
        graph.invoke(ask())
    assert limiter.in_flight == 0


async def test_a_cancelled_waiter_gives_no_slot_away():
    limiter = CallLimiter(1)
    await limiter.aacquire()
    waiter = asyncio.ensure_future(limiter.aacquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    limiter.release()  # hands the slot to the cancelled waiter, which must pass it on
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.01)
    assert limiter.in_flight == 0
    await asyncio.wait_for(limiter.aacquire(), 1)
    limiter.release()


def test_limiter_stays_out_of_dumps_state_and_checkpoints():
    limiter = CallLimiter(2)
    spec = MoASpec(layers=[[{"model": "openai:m", "samples": 2}]], limiter=limiter)
    assert "limiter" not in spec.model_dump() and "limiter" not in json.loads(spec.model_dump_json())
    saver = InMemorySaver()
    graph = create_self_moa(FakeChatModel(), samples=2, limiter=limiter).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke(ask(), config)
    assert "CallLimiter" not in repr(graph.get_state(config).values)
    assert b"CallLimiter" not in b"".join(blob for _, blob in saver.blobs.values() if isinstance(blob, bytes))


# --- huge references: trimmed to fit, with a warning, never dropped ----------------------------

HUGE = "word " * 40_000  # 200,000 characters


def _huge_on(sample: int):
    def reply(call) -> str:
        if call.role == "proposer" and call.sample == sample and not system_text(call):
            return HUGE
        return f"short answer {call.sample}"

    return reply


def test_trim_references_keeps_short_ones_whole_and_marks_the_cut():
    refs, warning = trim_references(["a" * 50, "b" * 1000, "c" * 2000], ["sample 0", "sample 1", "sample 2"], 1050)
    assert refs[0] == "a" * 50 and sum(len(r) for r in refs) <= 1050
    assert refs[1].endswith(TRIM_MARK) and refs[1].startswith("b" * 400) and len(refs[1]) == len(refs[2]) == 500
    assert "sample 1 from 1000 to 500 chars" in warning and "sample 2 from 2000 to 500 chars" in warning
    assert "sample 0" not in warning
    assert trim_references(["x" * 10], ["sample 0"], 100) == (["x" * 10], None)
    assert trim_references(["x" * 10], ["sample 0"], None) == (["x" * 10], None)


def test_huge_proposal_is_trimmed_for_the_aggregator_with_a_warning():
    model = FakeChatModel(reply=_huge_on(2))
    result = create_self_moa(model, samples=4, max_reference_chars=5_000).compile().invoke(ask())
    assert result["answer"]
    assert result["proposals"][2]["text"] == HUGE, "the full text stays in proposals"
    (aggregator,) = by_role(model, "aggregator")
    prompt = system_text(aggregator)
    assert len(prompt) < 5_000 + 2_000 and TRIM_MARK.strip() in prompt
    assert all(f"short answer {i}" in prompt for i in (0, 1, 3)), "nothing is dropped"
    (warning,) = result["warnings"]
    assert "sample 2 from 200000 to" in warning and "max_reference_chars" in warning


def test_default_budget_and_no_limit():
    model = FakeChatModel(reply=_huge_on(0))
    result = create_self_moa(model, samples=2).compile().invoke(ask())
    assert len(system_text(by_role(model, "aggregator")[0])) < 24_000 + 2_000 and result["warnings"]
    model = FakeChatModel(reply=_huge_on(0))
    result = create_self_moa(model, samples=2, max_reference_chars=None).compile().invoke(ask())
    assert HUGE.strip() in system_text(by_role(model, "aggregator")[0]) and result["warnings"] == []


def test_huge_proposal_in_a_sliding_window_and_in_a_middle_moa_layer():
    model = FakeChatModel(reply=_huge_on(4))
    graph = create_self_moa_seq(model, samples=8, window=4, reserved=2, max_reference_chars=3_000)
    result = graph.compile().invoke(ask())
    assert all(len(system_text(c)) < 3_000 + 2_000 for c in by_role(model, "aggregator"))
    assert len(result["warnings"]) == 1 and "aggregation step 1" in result["warnings"][0]
    assert "sample 4 from 200000" in result["warnings"][0]

    model = FakeChatModel(reply=_huge_on(1))
    result = create_moa([[model] * 3, [model] * 2], aggregator=model, max_reference_chars=3_000).compile().invoke(ask())
    second_layer = [c for c in by_role(model, "proposer") if system_text(c)]
    assert len(second_layer) == 2 and all(len(system_text(c)) < 3_000 + 2_000 for c in second_layer)
    assert ["layer 1 sample 1 from 200000" in w for w in result["warnings"]] == [True]


# --- more faults: failure rates on MoA and Self-MoA-Seq ------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5])
@pytest.mark.parametrize("method", ["moa", "seq"])
def test_failure_rates_on_moa_and_seq_produce_answers_and_record_failures(rate, method):
    proposer, aggregator = FakeChatModel(model="p", fail_rate=rate), FakeChatModel(model="agg")
    if method == "moa":
        graph = create_moa([[proposer] * 6] * 2, aggregator=aggregator, max_attempts=1)
    else:
        graph = create_self_moa_seq(proposer, samples=12, window=6, reserved=3, aggregator=aggregator, max_attempts=1)
    result = graph.compile().invoke(ask())
    failed = [p for p in result["proposals"] if p["error"]]
    assert result["answer"]
    assert all("FakeModelError" in p["error"] and p["text"] == "" for p in failed)
    assert bool(failed) == (rate > 0), "injected failures are recorded, and only those"
    steps = [i for a in result["aggregations"] for i in a["samples"]] if method == "seq" else []
    assert not set(steps) & {p["sample"] for p in failed}, "failed samples are never aggregated"


# --- the Self-MoA-Seq schedule, on real graph runs ---------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(2, 7).flatmap(lambda w: st.tuples(st.integers(1, 25), st.just(w), st.integers(1, w - 1))))
def test_seq_graph_sees_every_sample_in_exactly_one_step(args):
    n, window, reserved = args
    model = FakeChatModel()
    result = create_self_moa_seq(model, samples=n, window=window, reserved=reserved).compile().invoke(ask())
    seen = [i for step in result["aggregations"] for i in step["samples"]]
    assert sorted(seen) == list(range(n)) and len(seen) == n
    assert len(result["aggregations"]) == window_calls(n, window, reserved)
    assert len(by_role(model, "aggregator")) == window_calls(n, window, reserved)
    assert len(by_role(model, "proposer")) == n
    for step in result["aggregations"][1:]:
        assert step["reserved"] == reserved and 1 <= len(step["samples"]) <= window - reserved


# --- bad input: one table across API, spec files, CLI and server ------------------------------



@pytest.fixture(autouse=True, scope="module")
def _hardfake_provider():
    with model_providers({"hardfake": lambda name, **kw: FakeChatModel(model=name or "hardfake")}):
        yield
FM = FakeChatModel()
M = ["--model", "hardfake:x"]
SEQ_GRAPH = create_self_moa_seq(FakeChatModel(), samples=6).compile()

API = [
    (lambda: create_self_moa(FM, samples="6"), "samples must be an integer of at least 1, got '6'"),
    (lambda: create_self_moa(FM, samples=None), "samples must be an integer of at least 1, got None"),
    (lambda: create_self_moa(FM, retry_delay=-1), "'retry_delay': Input should be greater than or equal to 0"),
    (lambda: create_self_moa(FM, timeout=-5), "'timeout': Input should be greater than 0"),
    (lambda: create_self_moa(FM, sampling="batch"), "'sampling': Input should be 'parallel' or 'n'"),
    (lambda: create_self_moa(FM, aggregator_temperature=-1), "'aggregator.temperature'"),
    (lambda: create_self_moa(FM, max_reference_chars=10), "'max_reference_chars': Input should be greater than"),
    (lambda: create_self_moa(FM, limiter=64), "'limiter': Input should be an instance of CallLimiter"),
    (lambda: create_self_moa(FM, min_proposals=0), "'min_proposals': Input should be greater than or equal to 1"),
    (lambda: create_self_moa(FM, prompt="{references} and {0}"), "only the {references} placeholder"),
    (lambda: create_self_moa(FM, prompt=""), "prompt must contain the {references} placeholder"),
    (lambda: create_self_moa(""), "a model must be a model string like 'openai:gpt-4o-mini'"),
    (lambda: create_self_moa(None), "'layers.0.proposers.0.model': a model must be a model string"),
    (lambda: create_self_moa(FM, aggregator=3.5), "'aggregator.model': a model must be a model string"),
    (lambda: create_self_moa(FM, seed="x"), "'seed': Input should be a valid integer"),
    (lambda: create_self_moa(FM, temperature="hot"), "'temperature': Input should be a valid number"),
    (lambda: create_self_moa_seq(FM, samples=10, window="6"), "window must be an integer of at least 2, got '6'"),
    (lambda: create_self_moa_seq(FM, samples=10, review=True), "review works with one-shot aggregation only"),
    (lambda: create_moa([["  "]], aggregator=FM), "got an empty string"),
    (lambda: create_moa([[FM, 5]], aggregator=FM), "'layers.0.proposers.1.model': a model must be"),
    (lambda: CallLimiter(0), "CallLimiter limit must be an integer of at least 1, got 0"),
    (lambda: SEQ_GRAPH.invoke(ask(), context={"window": 1}), "run context {'window': 1}: invalid spec"),
    (lambda: SEQ_GRAPH.invoke(ask(), context={"reserved": 9}), "reserved must be smaller than window"),
    (lambda: SEQ_GRAPH.invoke(ask(), context={"model": ""}), "run context {'model': ''}"),
    (lambda: SEQ_GRAPH.invoke({"question": "hi"}), "input has no messages; invoke the graph with"),
]

SPECS = [
    ({"layers": [["a"]], "max_attempts": "two"}, "'max_attempts': Input should be a valid integer"),
    ({"layers": [[{"samples": 2}]]}, "spec is missing the required key 'layers.0.proposers.0.model'"),
    ({"layers": [["a"]], "aggregator": {"window": 1}}, "'aggregator.window': Input should be greater than"),
    ({"layers": [["a"]], "aggregator": {"reserved": 0}}, "'aggregator.reserved': Input should be greater than"),
    ({"layers": [["a"]], "aggregator": {"mode": "window"}, "review": True}, "remove aggregator.window or set review to false"),
    ({"layers": [["a"]], "aggregator": {"modle": "a"}}, "unknown key 'aggregator.modle' in spec"),
    ({"layers": [["a"]], "limiter": 5}, "'limiter': Input should be an instance of CallLimiter"),
    ({"layers": [[{"model": "a", "temperature": -2}]]}, "'layers.0.proposers.0.temperature'"),
    ({"layers": "a"}, "'layers': Input should be a valid list"),
    ({"layers": [["a"]], "timeout": "soon"}, "'timeout': Input should be a valid number"),
    ({"layers": [["a"]], "aggregator": {"model": ""}}, "'aggregator.model': a model must be a model string"),
    (42, "spec must be a MoASpec, a dict or a path to a YAML/JSON file, got int"),
    (("spec.json", '{"layers": [["a"]],}'), "is not valid json"),
    (("spec.yaml", "layers:\n\t- [a]\n"), "is not valid YAML"),
    (("spec.yaml", "layers: [[a]]\nsamples: 6\n"), "unknown key 'samples' in spec"),
    (("spec.yml", "[a, b]"), "must hold a mapping with a 'layers' key, got list"),
    (("spec.yaml", "layers: [[{model: a, samples: -1}]]"), "'layers.0.proposers.0.samples'"),
    (("missing.yaml", None), "cannot read spec file"),
]

CLI = [
    (["run", "--samples", "-1", *M, "Hi"], "argument --samples: must be an integer of at least 1, got '-1'"),
    (["run", "--method", "seq", "--window", "1", *M, "Hi"], "argument --window: must be an integer of at least 2, got '1'"),
    (["run", "--method", "seq", "--reserved", "0", *M, "Hi"], "argument --reserved: must be an integer of at least 1, got '0'"),
    (["run", "--temperature", "-1", *M, "Hi"], "argument --temperature: must be a number of at least 0, got '-1'"),
    (["run", "--timeout", "0", *M, "Hi"], "argument --timeout: must be a number above 0, got '0'"),
    (["run", "--model", "", "Hi"], "a model must be a model string"),
    # Either "needs LangChain's init_chat_model: pip install 'selfmoa[providers]'" or, with langchain
    # installed, "cannot create model ...: Unable to infer model provider": both name the model.
    (["run", "--aggregator", "nosuchprovider:m", *M, "Hi"], "model 'nosuchprovider:m'"),
    (["run", "--spec", ("bad.yaml", "layers: [[\n"), "Hi"], "is not valid YAML"),
    (["run", "--spec", ("unk.yaml", "layers: [[hardfake:x]]\nwindow: 3\n"), "Hi"], "unknown key 'window' in spec"),
    (["run", "--spec", ("list.json", "[1, 2]"), "Hi"], "must hold a mapping with a 'layers' key, got list"),
    (["run", "--model", "openai:m@http://127.0.0.1:9/v1?key_env=HARDENING_UNSET", "Hi"], "set the HARDENING_UNSET"),
    (["serve", "--config", "/nonexistent/presets.yaml"], "cannot read config file"),
    (["run", "--method", "moa", "--layers", "-2", *M, "Hi"], "argument --layers: must be an integer of at least 1, got '-2'"),
    (["run", *M, ""], "the prompt is empty"),
    (["run", "--method", "seq", "--window", "6", "--reserved", "6", *M, "Hi"], "0 < reserved < window"),
]

Q = [{"role": "user", "content": "q"}]
SERVER = [
    ({"model": "team", "messages": "hi"}, 400, "'messages': Input should be a valid list"),
    ({"model": "team", "messages": []}, 400, "'messages': List should have at least 1 item"),
    ({"model": "team", "messages": Q, "temperature": "hot"}, 400, "'temperature': Input should be a valid number"),
    ({"model": "team", "messages": Q, "temperature": -1}, 400, "'temperature': Input should be greater than"),
    ({"model": "team", "messages": Q, "max_tokens": 0}, 400, "'max_tokens': Input should be greater than"),
    ({"messages": Q}, 400, "request is missing the required key 'model'"),
    ({"model": 5, "messages": Q}, 400, "'model': Input should be a valid string"),
    ({"model": "", "messages": Q}, 400, "'model': String should have at least 1 character"),
    ({"model": "team", "messages": Q, "tools": [{"type": "function"}]}, 400, "tools are not supported"),
    ({"model": "self-moa:nosuch:m", "messages": Q}, 404, "this server allows these models after '<preset>:'"),
    ({"model": "self-moa:openai:g@http://10.0.0.1/v1", "messages": Q}, 404, "only as named presets"),
    ({"model": "team", "messages": Q, "seed": "x"}, 400, "'seed': Input should be a valid integer"),
    ({"model": "team", "messages": [{"content": "q"}]}, 400, "missing the required key 'messages.0.role'"),
    ({"model": "team", "messages": ["hello"]}, 400, "'messages.0': Input should be a valid dictionary"),
    ({"model": "team", "messages": Q, "n": 0}, 400, "'n': Input should be greater than or equal to 1"),
    ({"model": "team", "messages": Q, "max_completion_tokens": -5}, 400, "'max_completion_tokens'"),
    ({"model": "team", "messages": Q, "stream_options": {"include_usage": "maybe"}}, 400, "include_usage"),
    (b"", 400, "request body is not valid JSON"),
]

TABLE = (
    [pytest.param("api", case, message, id=f"api-{i}") for i, (case, message) in enumerate(API)]
    + [pytest.param("spec", case, message, id=f"spec-{i}") for i, (case, message) in enumerate(SPECS)]
    + [pytest.param("cli", case, message, id=f"cli-{i}") for i, (case, message) in enumerate(CLI)]
    + [pytest.param("server", (body, st), message, id=f"server-{i}") for i, (body, st, message) in enumerate(SERVER)]
)


def test_the_table_has_at_least_40_cases():
    assert len(TABLE) >= 40


def _server_tests():
    """tests/test_server.py, the module pytest collected if it did (importing it a second time
    would register its fake model provider again, bound to the new module's dicts)."""
    for module in list(sys.modules.values()):
        if str(getattr(module, "__file__", "") or "").endswith(str(Path("tests", "test_server.py"))):
            return module
    import test_server

    return test_server


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    server = _server_tests()
    CONFIG, load_config, running = server.CONFIG, server.load_config, server.running

    path = tmp_path_factory.mktemp("hardening") / "presets.yaml"
    path.write_text(CONFIG)
    with running(load_config(path)) as url:
        yield url


def _file(tmp_path: Path, item):
    if not isinstance(item, tuple):
        return item
    name, text = item
    if text is not None:
        (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.parametrize(("kind", "case", "message"), TABLE)
def test_bad_input_gets_one_actionable_line(kind, case, message, tmp_path, request):
    if kind == "api":
        with pytest.raises((SpecError, ValueError)) as err:
            case()
        text = str(err.value)
    elif kind == "spec":
        with pytest.raises(SpecError) as err:
            create_from_spec(_file(tmp_path, case))
        text = str(err.value)
    elif kind == "cli":
        argv = [str(_file(tmp_path, a)) for a in case]
        out, err_stream = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err_stream):
            assert cli_main(argv) == 2
        assert err_stream.getvalue().startswith("selfmoa: error: ") and err_stream.getvalue().count("\n") == 1
        text = err_stream.getvalue().rstrip("\n")
    else:
        body, status = case
        url = request.getfixturevalue("server_url") + "/v1/chat/completions"
        response = httpx.post(url, content=body, timeout=30) if isinstance(body, bytes) else httpx.post(
            url, json=body, timeout=30
        )
        assert response.status_code == status
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        text = error["message"]
    assert message in text
    assert "\n" not in text and "Traceback" not in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--samples", "0", "--model", "openai:x", "Hi"], "--samples: must be an integer of at least 1, got '0'"),
        (["run", "--max-tokens", "0", "Hi"], "--max-tokens: must be an integer of at least 1, got '0'"),
        (["run", "--timeout", "0", "Hi"], "--timeout: must be a number above 0"),
        (["serve", "--port", "-1"], "--port: must be a TCP port from 0 (any free port) to 65535, got '-1'"),
        (["serve", "--port", "70000"], "--port: must be a TCP port from 0 (any free port) to 65535, got '70000'"),
        (["eval", "--task", "gsm8k", "--limit", "0"], "--limit: must be an integer of at least 1"),
        (["run", "--model", "openai:m@http://127.0.0.1:9/v1?key_env=HARDENING_UNSET", "Hi"], "HARDENING_UNSET"),
        (["run", "--bogus", "Hi"], "unrecognized arguments: --bogus; see 'selfmoa --help'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_the_console_command_exits_2_without_a_traceback(argv, message):
    proc = subprocess.run([sys.executable, "-m", "selfmoa.cli", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, "one line, no usage block"
    assert proc.stderr.startswith("selfmoa: error: ") and message in proc.stderr


# --- secrets: the API key appears in no checkpoint, log, CLI output or server response ---------

KEY = "sk-hardening-" + "9f3c2a7e5b1d4c6a8e0f"
WRONG_KEY = "sk-wrong-" + "0d1e2f3a4b5c6d7e8f90"


def test_the_api_key_is_in_no_checkpoint_log_cli_output_or_server_response(tmp_path, monkeypatch, caplog, capsys):
    from langgraph.checkpoint.sqlite import SqliteSaver
    from openai_stub import OpenAIStub

    load_config, running = _server_tests().load_config, _server_tests().running

    monkeypatch.setenv("HARDENING_KEY", KEY)
    monkeypatch.setenv("HARDENING_WRONG_KEY", WRONG_KEY)
    caplog.set_level(logging.DEBUG)
    with OpenAIStub(api_key=KEY) as stub:
        model = f"openai:m@{stub.base_url}?key_env=HARDENING_KEY"

        # a graph with a SQLite checkpointer
        db = tmp_path / "checkpoints.sqlite"
        conn = sqlite3.connect(db, check_same_thread=False)
        graph = create_self_moa(model, samples=3).compile(checkpointer=SqliteSaver(conn))
        result = graph.invoke(ask(), {"configurable": {"thread_id": "secret"}})
        conn.commit()
        conn.close()
        stored = b"".join(p.read_bytes() for p in tmp_path.glob("checkpoints.sqlite*"))
        assert result["answer"].encode() in stored  # the scan looks at real checkpoint data
        assert KEY.encode() not in stored

        # the command line, as JSON
        assert cli_main(["run", "--model", model, "--samples", "2", "--json", "--quiet", "What is 17*3?"]) == 0
        out = capsys.readouterr()
        assert json.loads(out.out)["answer"] and KEY not in out.out and KEY not in out.err

        # the server: a success and an upstream failure (the endpoint rejects a wrong key)
        config = tmp_path / "presets.yaml"
        config.write_text(
            f'good: {{layers: [[{{model: "{model}", samples: 2}}]]}}\n'
            f'bad: {{layers: [[{{model: "openai:m@{stub.base_url}?key_env=HARDENING_WRONG_KEY", samples: 2}}]], '
            "max_attempts: 1}\n"
        )
        with running(load_config(config)) as url:
            ok = httpx.post(f"{url}/v1/chat/completions", json={"model": "good", "messages": Q}, timeout=60)
            bad = httpx.post(f"{url}/v1/chat/completions", json={"model": "bad", "messages": Q}, timeout=60)
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]
        assert bad.status_code == 502 and "AuthenticationError" in bad.json()["error"]["message"]
        for response in (ok, bad):
            assert KEY not in response.text and WRONG_KEY not in response.text
            assert KEY not in str(response.headers)
        # the key was really used: the endpoint saw it on every accepted request
        assert f"Bearer {KEY}" in stub.auth_headers and f"Bearer {WRONG_KEY}" in stub.auth_headers

    logs = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "chat/completions" in logs  # DEBUG logs of the clients were captured
    assert KEY not in logs and WRONG_KEY not in logs
