"""Settings of the server and its named ensembles, and reading them from a config file."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from selfmoa.graphs.spec import MoASpec, one_line, parse_spec
from selfmoa.runtime.errors import SpecError

__all__ = ["ServerConfig", "canonical_origin", "load_config"]


class ServerConfig(BaseModel):
    """Settings of the server and its named ensembles.

    In a config file, the `server:` key holds the settings below (all optional) and every
    other top-level key is a preset name mapped to a spec in the `MoASpec` format (see
    `load_config`). The API key is never read from a file: it comes from `api_key` or the
    `SELFMOA_API_KEY` environment variable.

    Example:
        >>> config = ServerConfig(presets={"pair": {"layers": [["openai:gpt-4o-mini", "openai:gpt-4.1-mini"]]}})
        >>> config.presets["pair"].layers[0].size, config.max_concurrency
        (2, 4)
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    presets: dict[str, MoASpec] = Field(default_factory=dict)
    """Named ensembles; a name equal to a built-in preset replaces it."""
    default_model: str = "local"
    """Model string of the built-in presets."""
    dynamic_models: list[str] = Field(default_factory=lambda: ["local", "local:*", "openai:*"])
    """Shell-style patterns of the model strings allowed in `<preset>:<model>` names ([] disables them)."""
    max_concurrency: int = Field(default=4, ge=1)
    """Ensembles running at once."""
    queue: int = Field(default=32, ge=0)
    """Requests that may wait for a running slot; past that, 429 with Retry-After."""
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    """Largest request body; larger ones get 413."""
    timeout: float | None = Field(default=600.0, gt=0)
    """Seconds one ensemble run may take before 504 (None: no limit)."""
    max_tokens: int | None = Field(default=512, ge=1)
    """Tokens per model call when the request sets no `max_tokens` (None: each model's default)."""
    max_input_chars: int | None = Field(default=None, ge=1)
    """Most characters of a request's messages; longer ones get 400 before any model call
    (None: only `max_body_bytes` and the models' known contexts bound them)."""
    local_slots: int = Field(default=6, ge=1)
    """Parallel slots of the embedded llama.cpp server; one server is shared by every preset."""
    api_key: SecretStr | None = None
    """Bearer token clients must send; None reads `SELFMOA_API_KEY`, and no key means no check."""
    dynamic_remote_without_key: bool = False
    """Whether a server without an API key serves `<preset>:<model>` names on endpoints that are not
    on this machine (`openai:*`, ...); by default only local models, so that any web page or
    neighbour reaching the server cannot spend a paid endpoint's credit."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Web page origins (`scheme://host[:port]`) whose browser requests are served, with CORS; requests
    with any other `Origin` header than the server's own get 403."""
    read_timeout: float = Field(default=30.0, gt=0)
    """Seconds a client may take to send a request's headers, and again its body; slower ones are cut off."""

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        out = []
        for origin in origins:
            canonical = canonical_origin(origin)
            if canonical is None:
                raise ValueError(
                    f"{origin!r} is not an origin; write scheme://host[:port] such as 'http://localhost:3000', no path"
                )
            out.append(canonical)
        return out

    @field_validator("presets")
    @classmethod
    def _no_review(cls, presets: dict[str, MoASpec]) -> dict[str, MoASpec]:
        # A request cannot answer the review pause, so such a preset would reply with nothing.
        paused = [name for name, spec in presets.items() if spec.review]
        if paused:
            raise ValueError(f"preset {paused[0]!r} sets review, which the server cannot answer; set review to false")
        return presets


def canonical_origin(text: str) -> str | None:
    """The form browsers send in `Origin` (lower case, no default port), or None if `text` is no http(s) origin.

    Example:
        >>> canonical_origin("HTTP://LocalHost:80/"), canonical_origin("https://[::1]:8443"), canonical_origin("null")
        ('http://localhost', 'https://[::1]:8443', None)
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:  # a port that is no number, or out of range
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username is not None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def load_config(path: str | Path) -> ServerConfig:
    """Read a YAML (or JSON) config file: named ensembles plus optional server settings.

    The file is a mapping; `server` holds settings, every other key names an ensemble::

        server:
          max_concurrency: 2
          dynamic_models: ["local", "local:*", "openai:gpt-4o*"]
          allowed_origins: ["http://localhost:3000"]   # a web app that calls the server from the browser
        my-hybrid:
          layers:
            - - {model: "openai:gpt-4o-mini", samples: 3}
              - {model: "local", samples: 3}
          aggregator: {model: "openai:gpt-4o-mini", window: 4, reserved: 2}

    Raises:
        SpecError: One line naming the file and the bad key or value.

    Example:
        >>> load_config("presets.yaml").presets["my-hybrid"].layers[0].size  # doctest: +SKIP
        6
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}; check the path") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"config file {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(
            f"config file {str(path)!r} must hold a mapping of preset names to specs, got {type(data).__name__}"
        )
    settings = data.pop("server", None) or {}
    if not isinstance(settings, dict):
        raise SpecError(f"config file {str(path)!r}: 'server' must be a mapping of settings")
    if "api_key" in settings:
        raise SpecError(f"config file {str(path)!r}: set the API key in SELFMOA_API_KEY, not in a file")
    presets = {}
    for name, spec in data.items():
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f"config file {str(path)!r}: preset names must be non-empty strings, got {name!r}")
        try:
            presets[name] = parse_spec(spec)
        except SpecError as exc:
            raise SpecError(f"config file {str(path)!r}, preset {name!r}: {exc}") from None
    try:
        return ServerConfig(presets=presets, **settings)
    except ValidationError as exc:
        raise SpecError(f"config file {str(path)!r}: {one_line(exc, 'server settings')}") from None
