"""Bad input: one table of cases across the API, spec files, the CLI and the server, each
answered with one actionable line; the console command never shows a traceback; incomplete
model strings are refused when the graph is built; empty or over-long input is refused
before any model call."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import URL, app_client, ask, server_tests

from selfmoa import (
    CallLimiter,
    InputError,
    ModelResolutionError,
    SpecError,
    create_from_spec,
    create_moa,
    create_self_moa,
    create_self_moa_seq,
    model_providers,
)
from selfmoa.cli import main as cli_main
from selfmoa.graphs.spec import parse_spec
from selfmoa.runtime.inputs import NO_INPUT
from selfmoa.testing import FakeChatModel

# --- bad input: one table across API, spec files, CLI and server ------------------------------

FM = FakeChatModel()
M = ["--model", "hardfake:x"]
SEQ_GRAPH = create_self_moa_seq(FakeChatModel(), samples=6).compile()


@pytest.fixture(autouse=True, scope="module")
def _hardfake_provider():
    # The CLI cases name "hardfake:x"; registered for this module only, so it leaks into no other.
    with model_providers({"hardfake": lambda name, **kw: FakeChatModel(model=name or "hardfake")}):
        yield

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
    ({"layers": [["a"]], "aggregator": {"window": 6}, "review": True}, "remove aggregator.window or drop review"),
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
    ({"model": "team", "messages": Q, "stream": "yes"}, 400, "'stream': Input should be a valid boolean"),
    ({"model": "team", "messages": [{"role": "user", "content": ["hi"]}]}, 400,
     "'messages.0.content': content must be a string or a list of text parts"),
]

TABLE = (
    [pytest.param("api", case, message, id=f"api-{i}") for i, (case, message) in enumerate(API)]
    + [pytest.param("spec", case, message, id=f"spec-{i}") for i, (case, message) in enumerate(SPECS)]
    + [pytest.param("cli", case, message, id=f"cli-{i}") for i, (case, message) in enumerate(CLI)]
    + [pytest.param("server", (body, st), message, id=f"server-{i}") for i, (body, st, message) in enumerate(SERVER)]
)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    server = server_tests()
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
        response = httpx.post(
            url, content=body, headers={"Content-Type": "application/json"}, timeout=30
        ) if isinstance(body, bytes) else httpx.post(url, json=body, timeout=30)
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


# --- incomplete model strings: refused when the graph is built, in one line ---------------------


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("openai:", "names no model after 'openai:'"),
        ("openai:  ", "names no model after 'openai:'"),
        ("anthropic:", "names no model after 'anthropic:'"),
        ("local:", "names no model after 'local:'; write 'local' or 'local:NAME'"),
        (":gpt-4o", "names no provider before ':'"),
        ("openai:@http://127.0.0.1:9/v1", "names no model before '@'"),
        ("openai:m@", "names no base URL after '@'"),
        ("openai:m@127.0.0.1:9/v1", "the base URL must start with http:// or https://"),
        ("openai:m@http://127.0.0.1:9/v1?key_env=", "names no variable after 'key_env='"),
        ("openai:m@http://127.0.0.1:9/v1?api_key=sk-x", "unknown option 'api_key' after '?'"),
        ("openai:m@https://bob:sk-x@proxy.example/v1", "the base URL holds a user name or password"),
        ("openai:m@https://sk-x@proxy.example/v1", "put the key in an environment variable"),
    ],
)
def test_incomplete_model_strings_fail_at_build_time(model, message):
    for build in (
        lambda: create_self_moa(model),
        lambda: create_moa([[FakeChatModel(), model]], aggregator=FakeChatModel()),
        lambda: create_self_moa(FakeChatModel(), aggregator=model),
        lambda: create_from_spec({"layers": [[model]]}),
    ):
        with pytest.raises(ModelResolutionError) as err:
            build()  # building, not invoking: no call was needed to find it
        assert message in str(err.value) and "\n" not in str(err.value)
        assert "sk-x" not in str(err.value), "a key written into the model string is not repeated"


def test_an_incomplete_model_string_is_one_line_from_the_cli():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(["run", "--model", "openai:", "Hi"]) == 2
    assert err.getvalue() == (
        "selfmoa: error: model 'openai:' names no model after 'openai:'; write 'openai:MODEL', e.g. "
        "'openai:gpt-4o-mini'\n"
    )


# --- empty or over-long input: refused before any model call, by the library and the server -------


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": None}],
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": "  \n "}],
        [{"role": "user"}],
        [{"role": "user", "content": []}],
        [{"role": "user", "content": [{"type": "text", "text": ""}]}],
        [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": None}],
    ],
)
def test_empty_content_is_a_400_with_the_librarys_error(messages):
    with app_client() as client:
        response = client.post(URL, json={"model": "team", "messages": messages})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": NO_INPUT, "type": "invalid_request_error", "param": "messages", "code": "invalid_input"
    }


@pytest.mark.parametrize("messages", [[], [("user", "")], [("user", "   ")], [("system", "Be brief."), ("user", "")]])
def test_the_library_refuses_empty_input_before_any_call(messages):
    model = FakeChatModel()
    graph = create_self_moa(model, samples=3).compile()
    for run in (lambda: graph.invoke({"messages": messages}), lambda: asyncio.run(graph.ainvoke({"messages": messages}))):
        with pytest.raises(InputError) as err:
            run()
        assert str(err.value) == NO_INPUT
    assert model.calls == []


def test_max_input_chars_refuses_before_any_call():
    model = FakeChatModel()
    graph = create_self_moa(model, samples=3, max_input_chars=1000).compile()
    with pytest.raises(InputError) as err:
        graph.invoke(ask("x" * 1001))
    assert str(err.value) == (
        "input is too long: 1,001 chars against max_input_chars=1,000; shorten the conversation or raise max_input_chars"
    )
    assert model.calls == []
    assert graph.invoke(ask("x" * 1000))["answer"]


@pytest.mark.parametrize("where", ["proposer", "aggregator"])
def test_a_known_context_refuses_before_any_call(where):
    small = FakeChatModel(model="small", profile={"max_input_tokens": 100})
    big = FakeChatModel(model="big")
    proposer, aggregator = (small, big) if where == "proposer" else (big, small)
    graph = create_self_moa(proposer, aggregator=aggregator, samples=3).compile()
    with pytest.raises(InputError) as err:
        asyncio.run(graph.ainvoke(ask("y" * 2000)))
    assert "about 500 tokens against a context of 100 tokens of model 'small'" in str(err.value)
    assert small.calls == [] and big.calls == []


def test_the_server_applies_max_input_chars_and_the_models_contexts():
    with app_client(max_input_chars=50) as client:
        response = client.post(URL, json={"model": "team", "messages": [{"role": "user", "content": "z" * 51}]})
    assert response.status_code == 400 and "51 chars against max_input_chars=50" in response.json()["error"]["message"]


def test_prompts_are_substituted_not_formatted():
    # A format spec from a spec file or a run context is text: it can neither exhaust memory
    # ("{references:>2500000000}") nor reach attributes ("{references.__class__}").
    model = FakeChatModel()
    hostile = "Merge:\n{references}\n{references:>2500000000} {references.__class__} {0} {{x}}"
    graph = create_self_moa(model, samples=2, prompt=hostile).compile()
    graph.invoke(ask(), context={"prompt": hostile})
    (system,) = [c.messages[0].text for c in model.calls if c.role == "aggregator"]
    assert system.endswith("\n{references:>2500000000} {references.__class__} {0} {{x}}") and len(system) < 2_000
    assert system.count("[Response ") == 2  # the numbered responses went where {references} was


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_selfmoa_home_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys, below):
    from selfmoa.local import LocalModelError
    from selfmoa.local.catalog import cache_dir

    home = tmp_path / "home"
    home.write_text("not a directory")
    monkeypatch.setenv("SELFMOA_HOME", str(home / below) if below else str(home))
    with pytest.raises(LocalModelError, match="SELFMOA_HOME must be a directory"):
        cache_dir()
    assert cli_main(["run", "--model", "local", "--samples", "2", "--quiet", "What is 17*3?"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SELFMOA_HOME must be a directory" in err and "Errno" not in err


@pytest.mark.parametrize(
    "options, where",
    [
        ({"samples": 10**6}, "samples"),
        ({"temperature": float("inf")}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"retry_delay": float("inf")}, "retry_delay"),
        ({"timeout": float("inf")}, "timeout"),
        ({"seed": 10**30}, "seed"),
        ({"seed": 2**63 - 3}, "seed"),
        ({"max_attempts": 10**9}, "max_attempts"),
        ({"adaptive": {"batch": 10**9}}, "adaptive.batch"),
    ],
)
def test_every_number_has_a_range_refused_in_one_line_wherever_it_enters(options, where):
    # A factory, a spec dict and a run context all refuse it before any call or allocation.
    entries = [
        lambda: create_self_moa(FM, **{k: v for k, v in options.items() if k != "samples"},
                                **({"samples": options["samples"]} if "samples" in options else {})),
        lambda: parse_spec({"layers": [[{"model": "openai:m", "samples": options.get("samples", 2)}]],
                            **{k: v for k, v in options.items() if k != "samples"}}),
    ]
    if set(options) <= {"samples", "temperature", "seed"}:
        entries.append(lambda: create_self_moa(FM, samples=2).compile().invoke(ask(), context=options))
    for enter in entries:
        with pytest.raises(SpecError) as err:
            enter()
        message = str(err.value)
        assert "\n" not in message and where.split(".")[-1] in message and len(message) < 400


def test_a_reply_with_a_huge_number_crashes_neither_vote_nor_select_nor_patience():
    huge = "Answer: " + "9" * 5000
    model = FakeChatModel(reply=lambda call: "Response " + "1" * 5000 if call.role == "aggregator" else huge)
    for mode in ("vote", "select"):
        out = create_self_moa(model, samples=3, mode=mode, answer_of="number").compile().invoke(ask())
        assert out["answer"] == huge and out["agreement"]["share"] == 1.0
    seq = create_self_moa_seq(model, samples=6, window=3, reserved=1, patience=1, answer_of="number")
    assert seq.compile().invoke(ask())["stopped"] in ("settled", "samples")


def test_the_retry_back_off_is_capped():
    from selfmoa.runtime.policy import MAX_BACKOFF, CallPolicy

    policy = CallPolicy(max_attempts=10, retry_delay=60)
    assert [policy._backoff(n) for n in (1, 2, 9)] == [60, MAX_BACKOFF, MAX_BACKOFF] and MAX_BACKOFF == 60
