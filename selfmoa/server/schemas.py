"""The chat completion request: its fields, its messages as LangChain messages, and its model name."""

from __future__ import annotations

import unicodedata
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from selfmoa.server.errors import _ApiError

__all__ = ["ChatCompletionRequest", "ChatMessage", "StreamOptions", "normalise_name", "to_messages"]

_MAX_INT32 = 2**31 - 1


class ChatMessage(BaseModel):
    """One message of a chat completion request; text content only."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content", mode="wrap")
    @classmethod
    def _content(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # Pydantic's own error names each arm of the union in its internal spelling
        # ("list[dict[str,any]]"); one sentence in the API's terms replaces them.
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(
                'content must be a string or a list of text parts such as [{"type": "text", "text": "Hi"}]'
            ) from None


class StreamOptions(BaseModel):
    """`stream_options` of a request."""

    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """The fields of an OpenAI chat completion request that an ensemble uses.

    Other fields (`user`, `metadata`, `top_p`, ...) are accepted and ignored, as OpenAI
    clients send many.
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1, le=_MAX_INT32)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=_MAX_INT32)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # what OpenAI-compatible servers take
    n: int | None = Field(default=None, ge=1)
    stream: StrictBool | None = False  # strict: "yes", 1 or "false" is a mistake to report, not a truth value
    stream_options: StreamOptions | None = None
    tools: list[Any] | None = None


def to_messages(messages: list[ChatMessage]) -> list[BaseMessage]:
    """Map request messages to LangChain messages (`developer` counts as `system`).

    Raises:
        _ApiError: 400 for non-text content parts.

    Example:
        >>> to_messages([ChatMessage(role="user", content=[{"type": "text", "text": "Hi"}])])[0].content
        'Hi'
    """
    out: list[BaseMessage] = []
    kinds = {"system": SystemMessage, "developer": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    for i, message in enumerate(messages):
        content = _text_of(i, message.content) if isinstance(message.content, list) else message.content
        out.append(kinds[message.role](content or ""))
    return out


def _text_of(i: int, parts: list[dict[str, Any]]) -> str:
    """The text of message `i`'s content parts, joined by newlines; 400 for a part that is not text."""
    texts = []
    for part in parts:
        if part.get("type") != "text":
            raise _ApiError(
                400,
                f"messages[{i}]: only text content parts are supported, got type {part.get('type')!r}",
                code="unsupported_content",
                param=f"messages[{i}].content",
            )
        if not isinstance(part.get("text"), str):
            raise _ApiError(
                400, f"messages[{i}]: a text part's 'text' must be a string, as in {{\"type\": \"text\", \"text\": \"Hi\"}}",
                code="invalid_request", param=f"messages[{i}].content",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def normalise_name(name: str) -> str:
    """The one form of a requested model name that every check, and then the build, sees.

    Unicode compatibility forms are folded (a full-width solidus is a slash) and outer
    whitespace stripped; control and invisible characters are refused. Checking one string
    and building another is how a name like `"self-moa:local:x.gguf\\n"` slipped past the
    file-path filter.

    Raises:
        _ApiError: 404 for a name with control or invisible characters.

    Example:
        >>> normalise_name(" self-moa:local:x\uff0egguf\t")
        'self-moa:local:x.gguf'
    """
    folded = unicodedata.normalize("NFKC", name).strip()
    bad = next((c for c in folded if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    if bad is not None:
        raise _ApiError(
            404, f"model names may not contain control or invisible characters, got {bad!r}", code="model_not_found",
            param="model",
        )
    return folded


def _request_schema() -> dict:
    """The JSON schema of a request, with its definitions inlined (an OpenAPI document has no `$defs`)."""
    schema = ChatCompletionRequest.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)
