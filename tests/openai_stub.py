"""A small OpenAI-compatible chat server on loopback, for tests of endpoint handling.

It answers `POST /v1/chat/completions` (plain and SSE streaming with a usage chunk) with
replies derived from the request, can return fewer choices than `n` asks for, and can
report usage the way some servers do (one choice's worth). Every request is recorded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OpenAIStub:
    """Run with `with OpenAIStub() as stub:`; `stub.base_url` ends in /v1."""

    def __init__(
        self,
        *,
        max_choices: int | None = None,
        usage: str = "all",
        api_key: str | None = None,
        max_n: int | None = None,
        keep_alive: bool = False,
        echo_key: bool = False,
    ):
        self.max_choices = max_choices
        self.max_n = max_n  # above it, refuse the request with 400 (as llama.cpp does past its slots)
        self.usage = usage
        self.api_key = api_key
        self.echo_key = echo_key  # a wrong key is quoted whole in the 401, as some proxies do
        self.requests: list[dict] = []
        self.auth_headers: list[str | None] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps connections open between requests, as llama.cpp and vLLM do.
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._lock:
                    stub.requests.append(body)
                    stub.auth_headers.append(self.headers.get("Authorization"))
                if stub.api_key and self.headers.get("Authorization") != f"Bearer {stub.api_key}":
                    sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    message = f"Incorrect API key provided: {sent}" if stub.echo_key else "Incorrect API key provided"
                    return self._json(401, {"error": {"message": message, "type": "invalid_request_error"}})
                if stub.max_n and int(body.get("n") or 1) > stub.max_n:
                    message = f"Field 'n': Value must be between 1 <= value <= {stub.max_n}"
                    return self._json(400, {"error": {"message": message, "type": "invalid_request_error"}})
                texts = stub.replies(body)
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
                counted = texts if stub.usage == "all" else texts[:1]
                completion = sum(len(t.split()) for t in counted)
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                         "total_tokens": prompt_tokens + completion}
                if body.get("stream"):
                    return self._sse(body, texts[0], usage)
                self._json(200, {
                    "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                                for i, t in enumerate(texts)],
                    "usage": usage,
                })

            def _json(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _sse(self, body, text, usage):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")  # the stream ends when the connection does
                self.close_connection = True
                self.end_headers()
                base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
                words = text.split(" ")
                for i, word in enumerate(words):
                    delta = {"content": word if i == 0 else " " + word}
                    chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(end)}\n\n".encode())
                if (body.get("stream_options") or {}).get("include_usage"):
                    self.wfile.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def replies(self, body: dict) -> list[str]:
        """Choice texts for a request: distinct per choice and seed (or per request when unseeded)."""
        n = int(body.get("n") or 1)
        if self.max_choices:
            n = min(n, self.max_choices)
        prompt = json.dumps(body["messages"], sort_keys=True)
        # Without a seed a real server samples afresh each request; a counter stands in.
        with self._lock:
            self._unseeded = getattr(self, "_unseeded", 0) + 1
            draw = body["seed"] if body.get("seed") is not None else f"draw{self._unseeded}"
        out = []
        for i in range(n):
            key = f"{prompt}|{draw}|{body.get('temperature')}|{i}"
            out.append(f"stub reply {hashlib.sha256(key.encode()).hexdigest()[:12]} with a few more words")
        return out

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
