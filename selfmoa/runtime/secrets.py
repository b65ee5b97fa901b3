"""API keys out of every text selfmoa keeps: the key values it knows of, and key shapes.

Error texts reach proposals, checkpoints, logs and the server's responses, so each one
passes through `redact` (see `selfmoa.runtime.errors.describe_error`).
"""

from __future__ import annotations

import os
import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.I)
"""Names (of environment variables and keyword arguments) whose values are treated as keys."""
# Key shapes redacted even when their value is unknown: OpenAI-style keys, bearer tokens,
# and keys in URL query strings (some providers take them there).
_KEY_SHAPES = re.compile(
    r"(?P<keep>\bBearer\s+|[?&](?:key|api_key|apikey|api-key|token|access_token)=)[^&\s\"',;]{8,}"
    r"|\bsk-[A-Za-z0-9_\-]{8,}",
    re.I,
)
_DUMMY_KEYS = frozenset({"unused", "not-needed", "EMPTY", "none", "sk-no-key-required"})
_KNOWN_SECRETS: set[str] = set()  # key values the resolver handed to a client in this process
_MIN_SECRET = 8  # shorter values would redact ordinary words


def remember_secret(value: Any) -> None:
    """Add a key value to those that `redact` removes from every error text.

    The resolver calls it for each key it hands to a client; call it for keys your own
    code gives to chat models that selfmoa does not create.

    Example:
        >>> remember_secret("my-secret-value-123")
        >>> redact("rejected key my-secret-value-123")
        'rejected key ***'
    """
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str) and len(value) >= _MIN_SECRET and value not in _DUMMY_KEYS:
        _KNOWN_SECRETS.add(value)


def redact(text: str) -> str:
    """`text` without API keys: known key values, secret-named environment variables, key shapes.

    Known values are the keys the resolver handed to clients (`OPENAI_API_KEY`, `?key_env=`
    variables, an explicit `api_key`) and those of chat model instances given to a graph;
    the environment is read each time, so a key set after import is covered too. Shapes
    are `sk-...` keys, bearer tokens and `key=`/`token=` query values.

    Example:
        >>> redact("Incorrect API key provided: sk-abcdef0123456789; header Bearer abc.def.ghi.jkl")
        'Incorrect API key provided: ***; header Bearer ***'
    """
    values = set(_KNOWN_SECRETS)
    values.update(v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= _MIN_SECRET)
    for value in sorted(values - _DUMMY_KEYS, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "***")
    return _KEY_SHAPES.sub(lambda m: (m.group("keep") or "") + "***", text)


def remember_model_secrets(model: BaseChatModel) -> None:
    """Remember the keys a chat model made by the caller holds (`ChatOpenAI(api_key=...)` keeps a `SecretStr`)."""
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, SecretStr):
            remember_secret(value)
