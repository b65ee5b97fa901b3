"""Secrets: an API key appears in no checkpoint, log, CLI output or server response."""

from __future__ import annotations

import json
import logging
import sqlite3

import httpx
from helpers import ask, server_tests

from selfmoa import (
    create_self_moa,
)
from selfmoa.cli import main as cli_main

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
