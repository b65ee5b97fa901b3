"""Secrets: an API key appears in no checkpoint, log, exception, CLI output or server response."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from helpers import ask, free_port, server_tests, wait_for_health

from selfmoa import (
    ProposalsFailedError,
    create_model,
    create_self_moa,
)
from selfmoa.cli import main as cli_main
from selfmoa.testing import FakeChatModel

# --- secrets: the API key appears in no checkpoint, log, CLI output or server response ---------

Q = [{"role": "user", "content": "q"}]
KEY = "sk-hardening-" + "9f3c2a7e5b1d4c6a8e0f"
WRONG_KEY = "sk-wrong-" + "0d1e2f3a4b5c6d7e8f90"


def test_the_api_key_is_in_no_checkpoint_log_cli_output_or_server_response(tmp_path, monkeypatch, caplog, capsys):
    from langgraph.checkpoint.sqlite import SqliteSaver
    from openai_stub import OpenAIStub

    load_config, running = server_tests().load_config, server_tests().running

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


# --- a key the endpoint echoes back in its error: redacted in proposals, exceptions, CLI, checkpoints ---

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


# --- the access log of `selfmoa serve` ------------------------------------------------------------


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
        httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions?token={secret}", content=b"{",
                   headers={"Content-Type": "application/json"}, timeout=5)
        httpx.get(f"http://127.0.0.1:{port}/v1/{secret}", timeout=5)
        time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(20)
    text = log.read_text()
    assert '"GET /health HTTP/1.1" 200' in text and '"GET /v1/models HTTP/1.1" 200' in text  # the log is real
    assert '"POST /v1/chat/completions HTTP/1.1" 400' in text
    assert secret not in text
