"""`selfmoa serve`: any ensemble behind an OpenAI-compatible chat completions endpoint.

Routes: `POST /v1/chat/completions` (plain and SSE streaming), `GET /v1/models` and
`GET /health`. The request's `model` picks the ensemble:

- the built-in presets `self-moa`, `self-moa-select`, `moa` and `self-moa-seq`, on the default model
  (`"local"`, the embedded llama.cpp model, unless the config says otherwise);
- `<preset>:<model string>` for a built-in preset on another model, such as
  `self-moa:openai:gpt-4o-mini` (only model strings the config allows, and never custom
  endpoints or file paths: those are for named presets);
- any named spec of the config file (see `load_config`).

`usage` in a response is the total of every model call of the ensemble; the
`selfmoa` field adds the breakdown (proposals, per-model usage, timings), and plain
OpenAI clients ignore it. Errors are OpenAI-shaped:
`{"error": {"message", "type", "param", "code"}}`, one line, without tracebacks or keys.

The package's modules, each one concern, import one way only:
`config`, `errors` ← `schemas`, `admission`, `ensembles`, `guards` ← `body`, `streaming` ← `app` ← `serving`.

Who may ask: with `SELFMOA_API_KEY` set, only clients sending it; requests from web pages of
other origins than the server's own get 403 unless `server.allowed_origins` lists them, and
bodies not declared `application/json` get 415 (together, no web page can make a visitor's
browser run an ensemble); without a key, `<preset>:<model>` names run local models only.
"""

# The public API is `__all__`; the other names that the former single module made public
# stay importable from here (`X as X` marks them re-exported).
from selfmoa.server.app import create_app
from selfmoa.server.config import ServerConfig, load_config
from selfmoa.server.ensembles import BUILTIN_PRESETS
from selfmoa.server.schemas import ChatCompletionRequest as ChatCompletionRequest
from selfmoa.server.schemas import ChatMessage as ChatMessage
from selfmoa.server.schemas import StreamOptions as StreamOptions
from selfmoa.server.schemas import normalise_name as normalise_name
from selfmoa.server.schemas import to_messages as to_messages
from selfmoa.server.serving import ScrubAccessLog as ScrubAccessLog
from selfmoa.server.serving import log_config as log_config
from selfmoa.server.serving import serve

__all__ = ["BUILTIN_PRESETS", "ServerConfig", "create_app", "load_config", "serve"]
