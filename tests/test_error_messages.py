"""A failed call's error is one line that names the fix, read from the HTTP status and the causes.

The hints depend on what an error is (its status code, or a `ConnectionError` somewhere in
its chain of causes), never on the name of its class, so an SDK that renames or wraps its
errors keeps its hints and an unrelated error with a lookalike name gets none.
"""

from __future__ import annotations

import pytest

from selfmoa.runtime.errors import describe_error, status_of
from selfmoa.runtime.policy import is_retryable


class APIStatusError(Exception):
    """An SDK error carrying the response's status, as openai's and anthropic's do."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code


class Response:
    def __init__(self, status_code: int):
        self.status_code = status_code


class HTTPError(Exception):
    """An error carrying the response object instead (httpx, requests)."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.response = Response(status_code)


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "rejected the API key"),
        (403, "may not use this model"),
        (404, "does not know this model name"),
        (429, "rate limited by the endpoint"),
    ],
)
@pytest.mark.parametrize("error", [APIStatusError, HTTPError])
def test_the_status_code_decides_the_hint(error, status, hint):
    text = describe_error(error("request failed", status))
    assert text.startswith(f"{error.__name__}: request failed - ")
    assert hint in text
    assert "\n" not in text


def test_a_400_about_the_context_says_to_shorten_the_prompt():
    text = describe_error(APIStatusError("This model's maximum context length is 4096 tokens", 400))
    assert "longer than the model's context" in text
    assert describe_error(APIStatusError("invalid temperature", 400)) == "APIStatusError: invalid temperature"


def test_a_lookalike_class_name_without_a_status_gets_no_hint():
    class AuthenticationError(Exception):
        pass

    assert describe_error(AuthenticationError("no")) == "AuthenticationError: no"


def test_a_connection_error_deep_in_the_causes_says_the_endpoint_is_unreachable():
    # The shape of openai's APIConnectionError: raised from httpx's error, itself raised
    # from the socket's ConnectionRefusedError; none of the wrappers is a ConnectionError.
    class TransportError(Exception):
        pass

    class APIConnectionError(Exception):
        pass

    try:
        try:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError as exc:
                raise TransportError("All connection attempts failed") from exc
        except TransportError as exc:
            raise APIConnectionError("Connection error.") from exc
    except APIConnectionError as exc:
        error = exc
    text = describe_error(error)
    assert text.startswith("APIConnectionError: Connection error. - cannot reach the endpoint")
    assert status_of(error) is None


def test_a_cause_chain_that_loops_ends():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert describe_error(a) == "RuntimeError: a"


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (APIStatusError("busy", 429), True),
        (HTTPError("down", 503), True),
        (APIStatusError("bad key", 401), False),
        (ConnectionResetError("reset"), True),
        (ValueError("bad argument"), False),
    ],
)
def test_retries_follow_the_status_code_too(error, retry):
    assert is_retryable(error) is retry
