"""`studio/dev.py` (the README's Studio command) and `studio/webapp.py` (MCP results), without a model.

The real server, with MCP and A2A clients, is in `test_studio.py`.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import require

STUDIO = Path(__file__).resolve().parent.parent / "studio"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"studio_{name}", STUDIO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_refuses_a_taken_port_with_one_line():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, str(STUDIO / "dev.py"), "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 2
    assert proc.stderr == (
        f"studio: error: port {port} on 127.0.0.1 is in use (another `langgraph dev`?); stop that server, "
        f"or pick another port: python dev.py --port {port + 1}\n"
    )
    assert proc.stdout == ""


def test_port_free_tells_a_taken_port_from_a_free_one():
    dev = _load("dev")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.listen()
        assert not dev.port_free("127.0.0.1", port)
    assert dev.port_free("127.0.0.1", port)


def test_port_free_takes_ipv6_and_a_bad_host_is_one_line(capsys):
    dev = _load("dev")
    if socket.has_ipv6:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            try:
                s.bind(("::1", 0))
            except OSError:
                pytest.skip("no IPv6 loopback on this machine")
            port = s.getsockname()[1]
            s.listen()
            assert not dev.port_free("::1", port)
        assert dev.port_free("::1", port)
    assert dev.main(["--host", "no-such-host.invalid", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'no-such-host.invalid' is not an address of this machine" in err


def test_langgraph_json_mounts_the_mcp_middleware():
    config = json.loads((STUDIO / "langgraph.json").read_text())
    path, _, name = config["http"]["app"].partition(":")
    assert (STUDIO / path).resolve() == (STUDIO / "webapp.py").resolve() and name == "app"


OUTPUT = {
    "messages": [{"type": "human", "content": "What is 17*3?"}, {"type": "ai", "content": "51"}],
    "answer": "17*3 = 51.\nIt's 51 — \"fifty-one\".",
    "proposals": [{"sample": 0, "text": "51", "error": None, "latency": 1.5}],
    "usage": {"total": {"calls": 2}},
    "warnings": [],
}


def test_mcp_result_gives_the_answer_and_json():
    require("starlette", reason="needs: pip install 'selfmoa[studio]'")
    webapp = _load("webapp")
    # What langgraph-api 0.16 sends: the repr of the output state.
    raw = {"content": [{"type": "text", "text": repr(OUTPUT)}]}
    out = webapp.mcp_result(raw)
    assert out["content"] == [{"type": "text", "text": OUTPUT["answer"]}]
    assert out["structuredContent"] == {k: v for k, v in OUTPUT.items() if k != "messages"}
    json.dumps(out)  # all of it is JSON
    # Left alone: errors, outputs without an answer, text that is not a repr.
    for other in (
        {"isError": True, "content": [{"type": "text", "text": "boom"}]},
        {"content": [{"type": "text", "text": repr({"value": 1})}]},
        {"content": [{"type": "text", "text": "plain words"}]},
        {"content": [{"type": "text", "text": "__import__('os').system('true')"}]},  # never evaluated
    ):
        assert webapp.mcp_result(other) is other


def test_the_middleware_rewrites_tools_call_responses_only():
    require("starlette", reason="needs: pip install 'selfmoa[studio]'")
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.testclient import TestClient

    webapp = _load("webapp")

    async def mcp(request):
        body = await request.json()
        if body["method"] == "tools/call":
            return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": {
                "content": [{"type": "text", "text": repr(OUTPUT)}]}})
        return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": {"tools": []}})

    async def other(request):
        return Response(repr(OUTPUT), media_type="application/json")

    app = Starlette(routes=[Route("/mcp", mcp, methods=["POST"]), Route("/other", other, methods=["POST"])])
    client = TestClient(webapp.MCPAnswerMiddleware(app))
    reply = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}})
    assert reply.status_code == 200 and int(reply.headers["content-length"]) == len(reply.content)
    result = reply.json()["result"]
    assert result["content"][0]["text"] == OUTPUT["answer"] and result["structuredContent"]["usage"] == OUTPUT["usage"]
    listed = client.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert listed.json() == {"jsonrpc": "2.0", "id": 2, "result": {"tools": []}}
    assert ast.literal_eval(client.post("/other").text) == OUTPUT  # other paths untouched


FAILURE = {"error": "ProposalsFailedError",
           "message": "0 of 4 proposals succeeded (need 1):\n AuthenticationError: key sk-abcdef0123456789xyz rejected; "
                      "check the key's environment variable"}
FIX = ("ProposalsFailedError: 0 of 4 proposals succeeded (need 1): AuthenticationError: key *** rejected; "
       "check the key's environment variable")


def _langgraph_like_app(webapp):
    """The routes of langgraph-api 0.16 that matter here, with its in-process client and `webapp`'s middleware.

    As there, MCP's `tools/call` and A2A's `message/send` fetch the run's result through a loopback
    client (root path `/noauth`) and report `__error__["error"]` of a failed run: its class name only.
    """
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    app: Starlette

    async def loopback(method: str, path: str) -> dict:
        transport = httpx.ASGITransport(app=app, root_path="/noauth")
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return (await client.request(method, path, json={})).json()

    async def wait(request):
        return JSONResponse({"__error__": FAILURE})

    async def mcp(request):
        value = await loopback("POST", "/runs/wait")
        return JSONResponse({"jsonrpc": "2.0", "id": 1, "result": {
            "isError": True, "content": [{"type": "text", "text": value["__error__"]["error"]}]}})

    async def a2a(request):
        result = await loopback("GET", "/threads/t1/runs/r1/join")
        return JSONResponse({"jsonrpc": "2.0", "id": 1, "result": {"kind": "task", "status": {
            "state": "TASK_STATE_FAILED", "message": {"kind": "message", "role": "ROLE_AGENT", "parts": [
                {"kind": "text", "text": f"Error executing assistant: {result['__error__']['error']}"}]}}}})

    app = Starlette(routes=[Route("/runs/wait", wait, methods=["POST"]),
                            Route("/threads/{t}/runs/{r}/join", wait, methods=["GET"]),
                            Route("/mcp", mcp, methods=["POST"]), Route("/a2a/{a}", a2a, methods=["POST"])],
                    middleware=webapp.app.user_middleware)
    return app


def test_a_failed_run_reports_its_one_line_fix_over_mcp_and_a2a():
    require("starlette", reason="needs: pip install 'selfmoa[studio]'")
    from starlette.testclient import TestClient

    client = TestClient(_langgraph_like_app(_load("webapp")))
    mcp = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}).json()
    assert mcp["result"]["isError"] and mcp["result"]["content"] == [{"type": "text", "text": FIX}]
    a2a = client.post("/a2a/x", json={"jsonrpc": "2.0", "id": 1, "method": "message/send"}).json()
    assert a2a["result"]["status"]["message"]["parts"][0]["text"] == f"Error executing assistant: {FIX}"
    # The REST API itself, called from outside, keeps langgraph's shape.
    assert client.post("/runs/wait").json() == {"__error__": FAILURE}
