"""`selfmoa serve`: the real server on loopback, driven by the official `openai` client and `ChatOpenAI`.

The ensembles use `srvfake:<name>` models: deterministic `FakeChatModel`s made by a
provider registered here, so every answer, token count and failure is known in advance.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import uvicorn
from helpers import URL, app_client
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr
from starlette.testclient import TestClient

from selfmoa import SpecError, create_from_spec, model_providers
from selfmoa.cli import build_parser, main, serve_command
from selfmoa.server import ServerConfig, create_app, load_config
from selfmoa.server.admission import _Admission
from selfmoa.testing import FakeChatModel, count_tokens

KEY = "srv-test-key-0123456789"
SECRET = "srvtest-secret-abcdef0123456789"  # not key-shaped: found through the environment
QUESTION = "What is 17*3?"
Q = [{"role": "user", "content": QUESTION}]

CREATED: list[tuple[str, dict]] = []
"""Every model the server made: (name, keyword arguments it passed)."""
MODELS: dict[str, FakeChatModel] = {}
"""The last model made per name, to inspect its calls."""


def _leaky(call) -> str:
    raise ValueError(f"upstream rejected the key {os.environ.get('SRVTEST_API_KEY', '')}")


BEHAVIOUR = {
    "broken": {"fail_roles": frozenset({"proposer"})},
    "leaky": {"reply": _leaky},
    "load": {"latency": 0.05},
    "slow": {"latency": 0.4},
    "slower": {"latency": 5.0},
}


def _provider(name: str, **kwargs) -> FakeChatModel:
    CREATED.append((name, dict(kwargs)))
    # The server passes max_tokens (and slots for local models); the fake takes neither.
    accepted = {k: v for k, v in kwargs.items() if k in FakeChatModel.model_fields}
    model = FakeChatModel(model=name or "srvfake", **accepted, **BEHAVIOUR.get(name, {}))
    MODELS[name] = model
    return model




@pytest.fixture(autouse=True, scope="module")
def _srvfake_provider():
    with model_providers({"srvfake": _provider}):
        yield

CONFIG = """
server:
  max_concurrency: 16
  queue: 256
  timeout: 60
  dynamic_models: ["srvfake:*"]
team: {layers: [[{model: "srvfake:team", samples: 3}]]}
usage: {layers: [[{model: "srvfake:usage", samples: 4}]]}
params: {layers: [[{model: "srvfake:params", samples: 3}]]}
lc: {layers: [[{model: "srvfake:lc", samples: 3}]]}
seq: {layers: [[{model: "srvfake:seq", samples: 5}]], aggregator: {window: 3, reserved: 1}}
broken: {layers: [[{model: "srvfake:broken", samples: 2}]], max_attempts: 1}
leaky: {layers: [[{model: "srvfake:leaky", samples: 2}]], max_attempts: 1}
load: {layers: [[{model: "srvfake:load", samples: 3}]]}
pathy: {layers: [[{model: "srvfake:/tmp/models/m.gguf", samples: 2}]]}
"""


@contextlib.contextmanager
def running(config: ServerConfig) -> Iterator[str]:
    """Serve `config` with uvicorn on a free loopback port in a thread; yields the base URL."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="selfmoa-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("server") / "presets.yaml"
    path.write_text(CONFIG)
    config = load_config(path)
    config.api_key = SecretStr(KEY)
    with running(config) as url:
        yield url


@pytest.fixture
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=60)


def ask(client: openai.OpenAI, model: str = "team", question: str = QUESTION, **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], **kwargs)


def expected_answer(spec: dict, question: str = QUESTION) -> str:
    """The answer the same ensemble gives when run in-process, with fresh fakes."""
    return create_from_spec(spec).compile().invoke({"messages": [("user", question)]})["answer"]


def error_of(exc: openai.APIStatusError) -> dict:
    return exc.response.json()["error"]


# --- answers, usage, the extension field ----------------------------------------------------


def test_plain_completion_is_the_ensembles_answer(client):
    out = ask(client)
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-") and out.model == "team"
    assert len(out.choices) == 1 and out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == expected_answer(
        {"layers": [[{"model": FakeChatModel(model="team"), "samples": 3}]]}
    )


def test_usage_is_the_total_of_every_call(client):
    out = ask(client, "usage")
    calls = MODELS["usage"].calls
    assert len(calls) == 5, "4 proposals + 1 aggregation"
    prompt = sum(count_tokens(m.text) for c in calls for m in c.messages)
    completion = sum(count_tokens(r) for c in calls for r in c.replies)
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (prompt, completion)
    assert out.usage.total_tokens == prompt + completion
    assert out.model_extra["selfmoa"]["calls"] == 5


def test_extension_field_breaks_the_run_down(client):
    ext = ask(client).model_extra["selfmoa"]
    assert ext["ensemble"] == "team"
    assert (ext["proposals"], ext["failed_proposals"], ext["aggregations"], ext["calls"]) == (3, 0, 1, 4)
    assert set(ext["usage_by_model"]) == {"team"} and ext["usage_by_model"]["team"]["calls"] == 4
    assert ext["latency_s"] > 0 and ext["queue_s"] >= 0 and ext["warnings"] == []


def test_the_breakdown_by_model_shows_no_server_path(client):
    ext = ask(client, "pathy").model_extra["selfmoa"]
    assert MODELS["/tmp/models/m.gguf"].calls, "the label is the model's path"
    assert list(ext["usage_by_model"]) == ["<server path>"] and ext["usage_by_model"]["<server path>"]["calls"] == 3


def test_streaming_sends_the_answer_token_by_token_then_usage(client):
    plain = ask(client)
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3, "the answer arrives in several chunks, not one blob"
    assert "".join(pieces) == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage.total_tokens == plain.usage.total_tokens
    assert last.model_extra["selfmoa"]["proposals"] == 3
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_include_usage_sends_no_usage(client):
    chunks = list(ask(client, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].model_extra["selfmoa"]["calls"] == 4


def test_sliding_window_streams_only_the_final_synthesis(client):
    plain = ask(client, "seq")
    chunks = list(ask(client, "seq", stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert plain.model_extra["selfmoa"]["aggregations"] == 2, "two window steps, one of them streamed"


def test_chat_openai_invoke_and_stream(base_url):
    llm = ChatOpenAI(model="lc", base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, stream_usage=True)
    message = llm.invoke(QUESTION)
    assert message.content == expected_answer({"layers": [[{"model": FakeChatModel(model="lc"), "samples": 3}]]})
    calls = MODELS["lc"].calls
    assert message.usage_metadata["input_tokens"] == sum(count_tokens(m.text) for c in calls for m in c.messages)
    chunks = list(llm.stream(QUESTION))
    assert len(chunks) > 3 and "".join(c.content for c in chunks) == message.content
    merged = sum(chunks[1:], chunks[0])
    assert merged.usage_metadata["total_tokens"] == message.usage_metadata["total_tokens"]


def test_temperature_seed_and_max_tokens_reach_the_proposers(base_url):
    llm = ChatOpenAI(
        model="params", base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, temperature=0.3, seed=7, max_tokens=33
    )
    llm.invoke(QUESTION)
    assert ("params", {"max_tokens": 33}) in CREATED
    proposers = [c for c in MODELS["params"].calls if c.role == "proposer"]
    assert {c.temperature for c in proposers} == {0.3} and sorted(c.seed for c in proposers) == [7, 8, 9]
    (aggregator,) = [c for c in MODELS["params"].calls if c.role == "aggregator"]
    assert aggregator.temperature == 0.0, "the aggregator keeps its own temperature"
    made = len(CREATED)
    llm.invoke("again")
    assert len(CREATED) == made, "the graph variant for max_tokens=33 is cached"
    llm.bind(max_tokens=40).invoke(QUESTION)
    assert CREATED[-1] == ("params", {"max_tokens": 40}), "another max_tokens gets its own model clients"


def test_messages_map_to_langchain_messages(client):
    client.chat.completions.create(
        model="team",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "17*3?"}]},
        ],
    )
    proposer = next(c for c in MODELS["team"].calls if c.role == "proposer" and c.messages[0].text == "Be brief.")
    assert [type(m) for m in proposer.messages] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
    assert [m.text for m in proposer.messages] == ["Be brief.", "Hi", "", "What is\n17*3?"]


def test_dynamic_names_put_a_builtin_preset_on_an_allowed_model(client):
    out = ask(client, "self-moa:srvfake:dyn")
    assert out.model_extra["selfmoa"]["usage_by_model"].keys() == {"dyn"}
    assert out.model_extra["selfmoa"]["proposals"] == 6
    made = len(CREATED)
    for name, why in [
        ("self-moa:local", "allows these models"),
        ("self-moa:srvfake:x@http://127.0.0.1:9/v1?key_env=SRVTEST_API_KEY", "custom endpoints"),
        ("self-moa:srvfake:../x.gguf", "file paths"),
    ]:
        with pytest.raises(openai.NotFoundError) as err:
            ask(client, name)
        assert why in error_of(err.value)["message"]
    assert len(CREATED) == made, "a refused name makes no model"


def test_models_and_health(client, base_url):
    ids = [m.id for m in client.models.list().data]
    assert ids[:3] == ["self-moa", "moa", "self-moa-seq"] and {"team", "seq", "load"} <= set(ids)
    health = httpx.get(f"{base_url}/health").json()  # no key needed
    assert health["status"] == "ok" and health["max_concurrency"] == 16 and health["queue"] == 256


# --- errors -----------------------------------------------------------------------------------


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        ask(client, "no-such-ensemble")
    error = error_of(err.value)
    assert error["code"] == "model_not_found" and error["param"] == "model" and "self-moa" in error["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"model": "team", "messages": [', "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"model": "team"}', "messages"),
        (b'{"model": "team", "messages": [{"role": "tool", "content": "x"}]}', "role"),
        (b'{"model": "team", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', "only text"),
    ],
)
def test_bad_bodies_are_400(base_url, body, message):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    response = httpx.post(f"{base_url}/v1/chat/completions", content=body, headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and message in error["message"] and "\n" not in error["message"]


def test_oversized_body_is_413(client):
    with pytest.raises(openai.APIStatusError) as err:
        ask(client, question="word " * 250_000)  # about 1.2 MB, over the 1 MiB default
    assert err.value.status_code == 413 and error_of(err.value)["code"] == "request_too_large"


def test_missing_or_wrong_key_is_401(base_url):
    response = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "team", "messages": []})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{base_url}/v1/models").status_code == 401
    wrong = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY + "x", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        ask(wrong)


def test_n_above_one_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, n=2)
    error = error_of(err.value)
    assert error["param"] == "n" and "one synthesized answer" in error["message"]


def test_all_proposers_failing_is_502_in_one_line(client, base_url):
    with pytest.raises(openai.APIStatusError) as err:
        ask(client, "broken")
    assert err.value.status_code == 502
    error = error_of(err.value)
    assert error["code"] == "proposals_failed" and "0 of 2 proposals" in error["message"]
    assert "\n" not in error["message"] and "Traceback" not in err.value.response.text
    # Streamed, the failure comes before the first token, so it keeps its status too.
    body = {"model": "broken", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    with httpx.stream(
        "POST", f"{base_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        assert r.status_code == 502 and "proposals_failed" in r.read().decode()


def test_secrets_in_upstream_errors_are_redacted(client, monkeypatch, caplog):
    monkeypatch.setenv("SRVTEST_API_KEY", SECRET)
    with pytest.raises(openai.APIStatusError) as err:
        ask(client, "leaky")
    assert err.value.status_code == 502 and "upstream rejected the key ***" in error_of(err.value)["message"]
    assert SECRET not in err.value.response.text and KEY not in err.value.response.text
    assert "upstream rejected" in caplog.text and SECRET not in caplog.text


# --- model names: normalised once, before the allow-list; no server path reaches a client -----------


@pytest.mark.parametrize("suffix", [" ", "\t", "\n", "\r\n", " \u3000"])
@pytest.mark.parametrize("name", ["evil.gguf", "evil.GGUF", "evil\uff0egguf", "sub\uff0fevil"])
def test_a_file_name_with_trailing_whitespace_never_reaches_the_file_system(name, suffix, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.gguf").write_bytes(b"GGUF")
    made = []
    monkeypatch.setattr("selfmoa.server.ensembles.model_client", lambda *a, **k: made.append(a) or FakeChatModel())
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
    with app_client(dynamic_models=["relfake:*"], dynamic_remote_without_key=True) as client:
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


# --- load, queue, time limit, disconnects --------------------------------------------------------


async def test_load_200_concurrent_requests(base_url, capsys):
    requests = 200
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=120)

    async def one(i: int):
        return await ask_async(client, f"question {i} of the load test")

    started = time.perf_counter()
    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(requests)), return_exceptions=True), 180)
    elapsed = time.perf_counter() - started
    await client.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [], f"{len(errors)} failed, first: {errors[:1]}"
    for i, out in enumerate(results):
        assert out.choices[0].finish_reason == "stop"
        assert out.choices[0].message.content.startswith("load answer ")
        assert f"question {i} of the load test" in out.choices[0].message.content
        assert out.model_extra["selfmoa"]["calls"] == 4 and out.usage.total_tokens > 0
    assert len(MODELS["load"].calls) == requests * 4
    assert MODELS["load"].peak_concurrency <= 16 * 3, "at most max_concurrency ensembles of 3 parallel calls"
    with capsys.disabled():
        print(f"\nload test: {requests} concurrent requests in {elapsed:.2f}s = {requests / elapsed:.1f} requests/s")


async def ask_async(client: openai.AsyncOpenAI, question: str):
    return await client.chat.completions.create(model="load", messages=[{"role": "user", "content": question}])


@pytest.fixture
def small_url() -> Iterator[str]:
    config = ServerConfig(
        presets={
            "slow": {"layers": [[{"model": "srvfake:slow", "samples": 2}]]},
            "slower": {"layers": [[{"model": "srvfake:slower", "samples": 2}]]},
        },
        max_concurrency=1,
        queue=1,
        timeout=3,
    )
    with running(config) as url:
        yield url


async def test_past_the_queue_requests_get_429_with_retry_after(small_url):
    body = {"model": "slow", "messages": [{"role": "user", "content": QUESTION}]}
    async with httpx.AsyncClient(timeout=30) as http:
        responses = await asyncio.gather(*(http.post(f"{small_url}/v1/chat/completions", json=body) for _ in range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429, 429], "1 running + 1 waiting; the others are turned away"
    busy = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "server_busy" for r in busy)


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


def test_retry_after_moves_with_load_on_a_real_server():
    config = ServerConfig(
        presets={"slow": {"layers": [[{"model": "srvfake:slow", "samples": 2}]]}}, max_concurrency=1, queue=1
    )

    async def burst(url: str, n: int) -> list[int]:
        body = {"model": "slow", "messages": Q}
        async with httpx.AsyncClient(timeout=60) as http:
            responses = await asyncio.gather(*(http.post(f"{url}{URL}", json=body) for _ in range(n)))
        return [int(r.headers["retry-after"]) for r in responses if r.status_code == 429]

    with running(config) as url:
        light = asyncio.run(burst(url, 4))
        heavy = asyncio.run(burst(url, 16))
    assert len(light) == 2 and len(heavy) == 14
    assert max(heavy) > max(light), (light, heavy)
    assert sorted(heavy) == sorted(set(heavy)) or len(set(heavy)) > 3, "a burst's retries are spread out"


def test_a_run_past_the_time_limit_is_504(small_url):
    body = {"model": "slower", "messages": [{"role": "user", "content": QUESTION}]}
    started = time.perf_counter()
    response = httpx.post(f"{small_url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
    assert time.perf_counter() - started < 4.9, "stopped by the 3 s limit, not by the 5 s model"


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_goes_away_frees_its_slot(small_url, stream):
    body = {"model": "slower", "stream": stream, "messages": [{"role": "user", "content": QUESTION}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{small_url}/v1/chat/completions", json=body, timeout=0.5)
    deadline = time.monotonic() + 1.5  # well before the 3 s time limit would free it
    while httpx.get(f"{small_url}/health").json()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{small_url}/health").json()["running"] == 0


# --- configuration and the command line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server: {max_concurency: 2}", "unknown key 'max_concurency'"),
        ("server: {api_key: abc}", "SELFMOA_API_KEY"),
        ("mine: {layers: []}", "preset 'mine'"),
        ("- a\n- b", "must hold a mapping"),
        ("mine: {layers: [[local]], review: true}", "preset 'mine' sets review, which the server cannot answer"),
    ],
)
def test_bad_config_files_are_one_line_spec_errors(tmp_path, text, message):
    path = tmp_path / "presets.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_config(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_serve_options():
    args = build_parser().parse_args(
        ["serve", "--port", "0", "--config", "p.yaml", "--max-concurrency", "2", "--queue", "3"]
    )
    assert args.func is serve_command
    assert (args.host, args.port, args.config, args.max_concurrency, args.queue) == ("127.0.0.1", 0, "p.yaml", 2, 3)


def test_cli_serve_with_a_bad_config_exits_2_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("mine: {layers: [[{model: x, samples: 0}]]}")
    assert main(["serve", "--port", "0", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("selfmoa: error: ") and "preset 'mine'" in err and err.count("\n") == 1


def test_cli_serve_without_the_server_extra_names_the_install(monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "selfmoa.server" or m.startswith("selfmoa.server.")]:
        monkeypatch.delitem(sys.modules, name)  # the package and its modules, so that all are imported anew
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes `import fastapi` fail
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'selfmoa[server]'" in err and "fastapi" in err and err.count("\n") == 1
