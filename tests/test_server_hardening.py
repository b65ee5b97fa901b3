"""`selfmoa serve` against cross-site requests, keyless spending, odd keys, slow clients and loose requests.

Issue 24's review of the server: each test here failed on the code before that review's fixes.
The app runs in-process on fake models (`relfake:` of `helpers.app_client`), except where the
connection itself is under test (a real uvicorn on loopback).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from helpers import URL, app_client
from pydantic import SecretStr
from starlette.testclient import TestClient

from selfmoa.server import ServerConfig, create_app, serving
from selfmoa.testing import FakeChatModel

Q = [{"role": "user", "content": "What is 17*3?"}]
BODY = {"model": "team", "messages": Q}


@pytest.fixture(autouse=True)
def _no_key_in_the_environment(monkeypatch):
    monkeypatch.delenv("SELFMOA_API_KEY", raising=False)


def _error(response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "\n" not in error["message"]
    return error


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    """An ASGI scope of a request, with these raw header bytes."""
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"testserver"), *headers], "client": ("127.0.0.1", 5), "server": ("testserver", 80)}


async def _call(app, scope: dict, chunks: list[bytes]) -> list[dict]:
    """Drive the ASGI app with a body sent as `chunks`, then nothing more (a stalled client); no chunks: no body."""
    sent: list[dict] = []
    queue = list(chunks)

    async def receive() -> dict:
        if queue:
            return {"type": "http.request", "body": queue.pop(0), "more_body": True}
        if not chunks:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the rest of the body never comes
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


# --- 1. cross-site requests -----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None])
def test_a_body_that_is_not_declared_json_is_415(content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    with app_client() as client:
        response = client.post(URL, content=json.dumps(BODY), headers=headers)
    assert response.status_code == 415, response.text
    error = _error(response)
    assert error["code"] == "unsupported_media_type" and "Content-Type: application/json" in error["message"]


def test_json_with_a_charset_is_still_json():
    with app_client() as client:
        response = client.post(URL, content=json.dumps(BODY), headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://testserver:8080", "https://testserver"])
def test_a_request_from_a_foreign_web_page_is_403(origin):
    with app_client() as client:
        # What a browser sends cross-site without a preflight: text/plain and the page's Origin.
        simple = client.post(URL, content=json.dumps(BODY), headers={"Content-Type": "text/plain", "Origin": origin})
        as_json = client.post(URL, json=BODY, headers={"Origin": origin})
        listing = client.get("/v1/models", headers={"Origin": origin})
    for response in (simple, as_json, listing):
        assert response.status_code == 403, response.text
        error = _error(response)
        assert error["code"] == "origin_not_allowed" and "allowed_origins" in error["message"]


def test_the_servers_own_origin_and_listed_origins_pass():
    with app_client() as client:  # the test client's requests go to http://testserver
        assert client.post(URL, json=BODY, headers={"Origin": "http://testserver"}).status_code == 200
        assert client.post(URL, json=BODY, headers={"Origin": "http://TestServer:80"}).status_code == 200
    with app_client(allowed_origins=["http://localhost:3000/"]) as client:
        page = {"Origin": "http://localhost:3000"}
        assert client.post(URL, json=BODY, headers=page).status_code == 200
        preflight = client.options(URL, headers={**page, "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == page["Origin"]
        assert client.post(URL, json=BODY, headers={"Origin": "http://localhost:3001"}).status_code == 403


def test_allowed_origins_must_be_origins():
    with pytest.raises(ValueError, match="scheme://host"):
        ServerConfig(allowed_origins=["localhost:3000/app"])


@pytest.fixture
def made(monkeypatch) -> list[str]:
    """The model strings the server made clients for (fakes instead of real clients)."""
    names: list[str] = []
    monkeypatch.setattr("selfmoa.server.ensembles.model_client",
                        lambda model, **kw: names.append(model) or FakeChatModel(model=model))
    return names


def test_a_keyless_server_keeps_dynamic_names_to_local_models(made):
    with TestClient(create_app(ServerConfig()), raise_server_exceptions=False) as client:
        refused = client.post(URL, json={"model": "self-moa:openai:gpt-4o-mini", "messages": Q})
        assert made == [], "no client was made for the paid endpoint"
        local = client.post(URL, json={"model": "self-moa:local", "messages": Q})
    assert refused.status_code == 404
    message = _error(refused)["message"]
    assert "SELFMOA_API_KEY" in message and "dynamic_remote_without_key" in message
    assert local.status_code == 200 and made == ["local"]


@pytest.mark.parametrize("settings", [{"api_key": SecretStr("k" * 20)}, {"dynamic_remote_without_key": True}])
def test_a_key_or_the_setting_allows_remote_dynamic_names(made, settings):
    headers = {"Authorization": "Bearer " + "k" * 20}
    with TestClient(create_app(ServerConfig(**settings)), raise_server_exceptions=False) as client:
        response = client.post(URL, json={"model": "self-moa:openai:gpt-4o-mini", "messages": Q}, headers=headers)
    assert response.status_code == 200, response.text
    assert made == ["openai:gpt-4o-mini"]


# --- 2. keys beyond ASCII ------------------------------------------------------------------------------


def test_a_non_ascii_key_matches_its_utf8_bytes(monkeypatch, caplog):
    key = "clé-ünïcode-0123456789"
    monkeypatch.setenv("SELFMOA_API_KEY", key)
    with caplog.at_level(logging.WARNING, logger="selfmoa.server"):
        app = create_app(ServerConfig())
    warning = [r.getMessage() for r in caplog.records if "SELFMOA_API_KEY" in r.getMessage()]
    assert len(warning) == 1 and "printable ASCII" in warning[0] and "\n" not in warning[0]
    assert key not in caplog.text
    # Straight to the app: the test client would re-encode the header's bytes.
    status = [asyncio.run(_call(app, _scope("GET", "/v1/models", [(b"authorization", b"Bearer " + sent)]), []))[0]["status"]
              for sent in (key.encode(), key.encode() + b"x", key.encode("latin-1"), b"")]
    assert status == [200, 401, 401, 401]


def test_an_ascii_key_gets_no_warning(monkeypatch, caplog):
    monkeypatch.setenv("SELFMOA_API_KEY", "plain-key-0123456789")
    with caplog.at_level(logging.WARNING, logger="selfmoa.server"):
        create_app(ServerConfig())
    assert "SELFMOA_API_KEY" not in caplog.text


# --- 3. slow clients -------------------------------------------------------------------------------------


async def test_a_body_that_stops_arriving_is_408_after_read_timeout():
    app = create_app(ServerConfig(read_timeout=0.3))
    scope = _scope("POST", URL, [(b"content-type", b"application/json"), (b"content-length", b"500")])
    started = time.monotonic()
    sent = await _call(app, scope, [b'{"model": "self-moa", '])
    assert time.monotonic() - started < 5
    start, body = sent[0], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
    assert body["error"]["code"] == "request_timeout" and "read_timeout" in body["error"]["message"]


@pytest.fixture
def slow_server() -> Iterator[int]:
    config = ServerConfig(read_timeout=0.5)
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="warning",
                                           access_log=False, **serving.uvicorn_options(config)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(20)


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n"])
def test_headers_that_never_finish_are_cut_off(slow_server, sent):
    with socket.create_connection(("127.0.0.1", slow_server), timeout=10) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        assert sock.recv(100) == b"", "the server closed the connection"
        assert time.monotonic() - started < 5


def test_a_kept_alive_connection_gets_the_same_limit_for_its_next_headers(slow_server):
    with socket.create_connection(("127.0.0.1", slow_server), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # the next request, then nothing
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 5


def test_serve_uses_the_time_limits():
    options = serving.uvicorn_options(ServerConfig(read_timeout=7))
    assert options["http"].header_timeout == 7
    assert options["timeout_keep_alive"] <= 10 and options["h11_max_incomplete_event_size"] <= 64 * 1024


# --- 4. request errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "param"), [
    ({"stream": "yes"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"stream_options": {"include_usage": "true"}}, "stream_options.include_usage"),
])
def test_request_booleans_are_strict(extra, param):
    with app_client() as client:
        response = client.post(URL, json={**BODY, **extra})
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["param"] == param and "valid boolean" in error["message"]


@pytest.mark.parametrize("content", [["hi"], 5, {"text": "hi"}, [["hi"]]])
def test_bad_content_says_what_content_may_be(content):
    with app_client() as client:
        response = client.post(URL, json={"model": "team", "messages": [{"role": "user", "content": content}]})
    assert response.status_code == 400, response.text
    error = _error(response)
    assert "content must be a string or a list of text parts" in error["message"]
    assert error["param"] == "messages.0.content"
    for internal in ("list[dict", "dict[str", "str]", "Any"):
        assert internal not in error["message"]


def test_a_text_part_without_text_says_so():
    with app_client() as client:
        response = client.post(URL, json={"model": "team", "messages": [
            {"role": "user", "content": [{"type": "text", "text": 5}]}]})
    assert response.status_code == 400 and "'text' must be a string" in _error(response)["message"]


@pytest.mark.parametrize(("settings", "model"), [
    ({"api_key": SecretStr("k" * 20)}, "self-moa:openai:gpt-4o-mini"),
    ({"presets": {"paid": {"layers": [["openai:gpt-4o-mini"]]}}}, "paid"),
])
def test_a_missing_provider_key_is_a_503_configuration_error(monkeypatch, settings, model):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with TestClient(create_app(ServerConfig(**settings)), raise_server_exceptions=False) as client:
        response = client.post(URL, json={"model": model, "messages": Q}, headers={"Authorization": "Bearer " + "k" * 20})
    assert response.status_code == 503, response.text
    error = _error(response)
    assert error["type"] == "server_error" and error["code"] == "configuration_error"
    assert "OPENAI_API_KEY" in error["message"] and "server" in error["message"]
