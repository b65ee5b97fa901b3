"""Past one machine, as far as one machine can show it (README, "Past one machine").

- Two `selfmoa serve` processes (replicas) with one config file, in front of one
  OpenAI-compatible backend (the loopback stub standing in for vLLM): either replica answers,
  every call reaches the backend, and each replica keeps its own `max_concurrency` and queue.
- A run that fails on one "replica" (its own graph, its own PostgreSQL connection) resumes
  on another from the checkpoints in the shared database, without calling the finished
  proposals again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import free_port, require, wait_for_health
from openai_stub import OpenAIStub

from selfmoa import create_self_moa
from selfmoa.runtime.errors import AggregationError
from selfmoa.testing import FakeChatModel

require("fastapi", reason="needs: pip install 'selfmoa[server]'")

SAMPLES = 3


def _start_replica(tmp_path, config, name: str) -> tuple[subprocess.Popen, str, object]:
    port = free_port()
    log = tmp_path / f"{name}.log"
    out = open(log, "wb")
    env = {k: v for k, v in os.environ.items() if k != "SELFMOA_API_KEY"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfmoa.cli", "serve", "--port", str(port), "--config", str(config)],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_health(url, proc, log)
    return proc, url, out


def test_two_serve_replicas_in_front_of_one_openai_compatible_backend(tmp_path):
    with OpenAIStub() as backend:
        config = tmp_path / "presets.yaml"
        config.write_text(
            "server: {max_concurrency: 1, queue: 0}\n"
            "vllm-self-moa:\n"
            f"  layers: [[{{model: 'openai:stub-model@{backend.base_url}', samples: {SAMPLES}}}]]\n"
        )
        replicas = [_start_replica(tmp_path, config, name) for name in ("a", "b")]
        try:
            body = {"model": "vllm-self-moa", "messages": [{"role": "user", "content": "What is 17*3?"}], "max_tokens": 32}
            answers = []
            for _, url, _ in replicas:
                reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60, trust_env=False)
                assert reply.status_code == 200, reply.text
                answers.append(reply.json())
            for answer in answers:
                assert answer["choices"][0]["message"]["content"].strip()
                assert answer["selfmoa"]["calls"] == SAMPLES + 1
            # Every call of both replicas reached the one backend.
            assert len(backend.requests) == 2 * (SAMPLES + 1)
            assert {r["model"] for r in backend.requests} == {"stub-model"}

            # Each replica limits itself (max_concurrency 1, queue 0): two requests at once to
            # one replica give one 429, which a balancer retries on the other replica.
            slow = {**body, "messages": [{"role": "user", "content": "x " * 2000}]}
            url = replicas[0][1]
            with ThreadPoolExecutor(4) as pool:
                codes = sorted(
                    pool.map(
                        lambda _: httpx.post(f"{url}/v1/chat/completions", json=slow, timeout=60, trust_env=False).status_code,
                        range(4),
                    )
                )
            assert 200 in codes and 429 in codes, codes
        finally:
            for proc, _, out in replicas:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                out.close()


def test_a_run_failed_on_one_replica_resumes_on_another_through_postgres(postgres_url):
    from langgraph.checkpoint.postgres import PostgresSaver

    config = {"configurable": {"thread_id": f"replicas-{uuid.uuid4()}"}}
    question = {"messages": [("user", "What is 17*3?")]}
    # Replica A: its aggregator is down, so the run stops after the proposals are checkpointed.
    first = FakeChatModel(model="m", fail_roles=frozenset({"aggregator"}))
    with PostgresSaver.from_conn_string(postgres_url) as saver:
        saver.setup()
        graph = create_self_moa(first, samples=SAMPLES, max_attempts=1).compile(checkpointer=saver)
        with pytest.raises(AggregationError):
            graph.invoke(question, config)
    assert sum(c.role == "proposer" for c in first.calls) == SAMPLES
    # Replica B: another graph object, another connection; same database and thread.
    second = FakeChatModel(model="m")
    with PostgresSaver.from_conn_string(postgres_url) as saver:
        result = create_self_moa(second, samples=SAMPLES).compile(checkpointer=saver).invoke(None, config)
    assert result["answer"].strip()
    assert [c.role for c in second.calls] == ["aggregator"], "finished proposals are not called again"
    assert [p["sample"] for p in result["proposals"]] == list(range(SAMPLES))
