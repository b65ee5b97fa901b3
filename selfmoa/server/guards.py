"""Who may send a request: the API key, the web page's origin, and the body's declared type.

A browser sends a cross-site POST without asking the server first (no CORS preflight) when
its body is `text/plain`, a form or multipart, and then only the response is hidden from
the page: the ensemble runs all the same. So a server on loopback without a key would run
(and pay for) whatever any open web page asks. Requests from another origin than the
server's own are refused unless the config lists it, and bodies must be declared JSON,
which a browser sends cross-site only after a preflight this server does not grant.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from fastapi import Request
from starlette.datastructures import Headers

from selfmoa.server.config import canonical_origin
from selfmoa.server.errors import _ApiError

_SENDABLE = frozenset(range(0x21, 0x7F))  # printable ASCII without space: what every client sends in a header


def _key_problem(key: str) -> str | None:
    """Why some clients cannot send `key` in an `Authorization` header, or None."""
    if all(ord(c) in _SENDABLE for c in key):
        return None
    # The key itself stays out of the message: it goes to the log.
    return (
        "holds characters other than printable ASCII (or spaces); it works from clients that send UTF-8 "
        "headers, but many cannot send it at all: use letters, digits and punctuation only"
    )


def _check_key(request: Request, key: bytes | None) -> None:
    """401 unless the request carries `Authorization: Bearer <key>`, compared as bytes in constant time."""
    if key is None:
        return
    # Starlette decodes header bytes as latin-1, so encoding back gives the bytes the client
    # sent; the key is compared as UTF-8, the encoding clients use for a non-ASCII key.
    scheme, _, token = request.headers.get("authorization", "").encode("latin-1").partition(b" ")
    if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), key):
        raise _ApiError(
            401,
            "missing or wrong API key: send the server's key as 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _check_json_type(request: Request) -> None:
    """415 unless the body is declared `application/json` (any parameters, such as a charset, allowed)."""
    declared = request.headers.get("content-type", "")
    if declared.partition(";")[0].strip().lower() != "application/json":
        raise _ApiError(
            415,
            f"request body must be JSON sent with 'Content-Type: application/json', got {declared[:80]!r}",
            code="unsupported_media_type",
        )


class _OriginGuard:
    """Pure ASGI middleware: 403 for a request whose `Origin` is neither the server's own nor listed.

    The server's own origin is the request's scheme and `Host`; requests without an `Origin`
    header (every non-browser client) pass.
    """

    def __init__(self, app: Any, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Refuse a foreign web page's request; pass everything else to the app."""
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self._trusted(origin, scope["scheme"], headers.get("host", "")):
                error = _ApiError(
                    403,
                    f"requests from web pages of origin {origin[:100]!r} are refused; if that page may use this "
                    "server, add its origin to server.allowed_origins in the config file",
                    code="origin_not_allowed",
                )
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _trusted(self, origin: str, scheme: str, host: str) -> bool:
        canonical = canonical_origin(origin)
        return canonical is not None and (canonical in self.allowed or canonical == canonical_origin(f"{scheme}://{host}"))
