"""No request body gets a 5xx from `POST /v1/chat/completions`.

Bodies come from three sources: hypothesis-jsonschema, drawing requests from the request
schema the app declares in its own OpenAPI document (valid requests and, with a field
replaced by any JSON value, nearly valid ones); arbitrary JSON values; and hand-written
pathological bodies (deep nesting, huge numbers, duplicate keys, invalid UTF-8, lone
surrogates). Every response must be below 500, carry no traceback, and be either a
completion or a one-line OpenAI-shaped error.

The app runs in-process (Starlette's TestClient, with server exceptions turned into 500
responses rather than raised) on fake models, so the whole file takes seconds.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from starlette.testclient import TestClient

from selfmoa import model_providers
from selfmoa.server import ServerConfig, create_app
from selfmoa.testing import FakeChatModel


@pytest.fixture(autouse=True, scope="module")
def _fuzzfake_provider():
    with model_providers({"fuzzfake": lambda name, **kw: FakeChatModel(model=name or "fuzzfake")}):
        yield

CONFIG = ServerConfig(
    presets={"team": {"layers": [[{"model": "fuzzfake:team", "samples": 2}]]}},
    default_model="fuzzfake:base",  # the built-in presets run on fakes too, never the embedded model
    dynamic_models=["fuzzfake:*"],
    dynamic_remote_without_key=True,  # fakes, not paid endpoints: the dynamic names are fuzzed too
    max_concurrency=64,
    queue=64,
    max_body_bytes=64 * 1024,
)
NAMES = ["team", "self-moa", "moa", "self-moa-seq", "self-moa:fuzzfake:x", "moa:fuzzfake:y", "nosuch"]
URL = "/v1/chat/completions"
JSON_TYPE = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(CONFIG), raise_server_exceptions=False) as c:
        yield c


def check(response) -> None:
    """The response is below 500, without a traceback, and a completion or a one-line error."""
    text = response.text
    assert response.status_code < 500, f"{response.status_code}: {text[:500]}"
    assert "Traceback" not in text and 'File "' not in text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        assert text.rstrip().endswith("data: [DONE]")
        return
    body = response.json()
    if response.status_code == 200:
        assert body["choices"][0]["message"]["content"]
    else:
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"] and "\n" not in error["message"]


def request_schema() -> dict:
    """The request body schema of the route, read from the app's OpenAPI document."""
    document = create_app(CONFIG).openapi()
    return document["paths"][URL]["post"]["requestBody"]["content"]["application/json"]["schema"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def requests(draw) -> dict:
    body = draw(from_schema(request_schema()))
    body["model"] = draw(st.sampled_from(NAMES) | st.text(max_size=30))  # mostly names that exist
    body.pop("stream", None)  # streaming is fuzzed below with a fixed body; here one JSON reply
    if draw(st.booleans()):
        body[draw(st.sampled_from(sorted(body)))] = draw(JSON)  # nearly valid: one field of any shape
    return body


def fuzz(examples: int) -> settings:
    # derandomize: the same examples every run, so the default suite stays quick and repeatable.
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@fuzz(70)
@given(body=requests())
def test_requests_drawn_from_the_openapi_schema_get_no_5xx(client, body):
    check(post(client, body))


@fuzz(300)
@given(body=JSON)
def test_any_json_body_gets_no_5xx(client, body):
    check(post(client, body))


def post(client, body):
    # Python's encoder writes NaN and Infinity, which the server's JSON reader accepts too.
    return client.post(URL, content=json.dumps(body), headers={"Content-Type": "application/json"})


def test_the_openapi_schema_is_the_request_model():
    schema = request_schema()
    assert {"model", "messages"} <= set(schema["required"]) and "temperature" in schema["properties"]


Q = '"messages": [{"role": "user", "content": "What is 17*3?"}]'

PATHOLOGICAL = {
    "array nested 1000 deep": b"[" * 1000 + b"]" * 1000,
    "object nested 1000 deep": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "content nested 1000 deep": ('{"model": "team", "messages": [{"role": "user", "content": '
                                 + "[" * 1000 + "]" * 1000 + "}]}").encode(),
    "extra field nested 990 deep": ('{"model": "team", ' + Q + ', "metadata": ' + "[" * 990 + "]" * 990 + "}").encode(),
    "extra field nested 40 deep": ('{"model": "team", ' + Q + ', "metadata": ' + "[" * 40 + "]" * 40 + "}").encode(),
    "number of 5000 digits": ('{"model": "team", ' + Q + ', "seed": ' + "9" * 5000 + "}").encode(),
    "seed of 100 digits": ('{"model": "team", ' + Q + ', "seed": ' + "9" * 100 + "}").encode(),
    "max_tokens 1e999": ('{"model": "team", ' + Q + ', "max_tokens": 1e999}').encode(),
    "max_tokens 10**30": ('{"model": "team", ' + Q + ', "max_tokens": 1000000000000000000000000000000}').encode(),
    "temperature NaN": ('{"model": "team", ' + Q + ', "temperature": NaN}').encode(),
    "temperature Infinity": ('{"model": "team", ' + Q + ', "temperature": Infinity}').encode(),
    "temperature -0.0": ('{"model": "team", ' + Q + ', "temperature": -0.0}').encode(),
    "duplicate keys": ('{"model": "nosuch", "model": "team", ' + Q + ', ' + Q + "}").encode(),
    "invalid UTF-8": b'{"model": "team", "messages": [{"role": "user", "content": "\xff\xfe\xc3("}]}',
    "UTF-16 body": ('{"model": "team", ' + Q + "}").encode("utf-16"),
    "lone surrogate in content": (b'{"model": "team", "messages": [{"role": "user", "content": "\\ud800"}]}'),
    "lone surrogate in model": ('{"model": "\\udfff", ' + Q + "}").encode(),
    "lone surrogate in a key": ('{"model": "team", ' + Q + ', "\\ud800": 1}').encode(),
    "NUL in model": ('{"model": "team\\u0000", ' + Q + "}").encode(),
    "model of 10 KB": ('{"model": "' + "m" * 10_000 + '", ' + Q + "}").encode(),
    "content part of an unknown type": b'{"model": "team", "messages": [{"role": "user", "content": [{"type": 5}]}]}',
    "content part not an object": b'{"model": "team", "messages": [{"role": "user", "content": [1, 2]}]}',
    "role not a string": b'{"model": "team", "messages": [{"role": ["user"], "content": "hi"}]}',
    "stream_options without stream": ('{"model": "team", ' + Q + ', "stream_options": {"include_usage": true}}').encode(),
    "stream of a string": ('{"model": "team", ' + Q + ', "stream": "yes"}').encode(),
    "only whitespace": b"   \n\t ",
    "a JSON string": b'"hello"',
    "trailing garbage": ('{"model": "team", ' + Q + "} trailing").encode(),
    "BOM then JSON": b"\xef\xbb\xbf" + ('{"model": "team", ' + Q + "}").encode(),
}


@pytest.mark.parametrize("body", list(PATHOLOGICAL.values()), ids=list(PATHOLOGICAL))
def test_pathological_bodies_get_no_5xx(client, body):
    check(client.post(URL, content=body, headers={"Content-Type": "application/json"}))


def test_deep_nesting_is_a_clear_400(client):
    response = client.post(URL, content=PATHOLOGICAL["array nested 1000 deep"], headers=JSON_TYPE)
    assert response.status_code == 400 and "nests deeper than 32 levels" in response.json()["error"]["message"]


def test_a_lone_surrogate_is_a_clear_400(client):
    response = client.post(URL, content=PATHOLOGICAL["lone surrogate in content"], headers=JSON_TYPE)
    assert response.status_code == 400 and "lone UTF-16 surrogate" in response.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_valid_request_still_answers(client, stream):
    body = json.loads('{"model": "team", ' + Q + "}") | {"stream": stream}
    response = client.post(URL, json=body)
    assert response.status_code == 200
    assert ("data: [DONE]" in response.text) if stream else response.json()["choices"][0]["message"]["content"]
