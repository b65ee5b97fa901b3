"""The embedded default model: a small GGUF model served by llama.cpp in-process.

Weights come from ordinary packages on the package index (no model hub at run
time). On first use the parts are joined, in order, into a cache directory and
checked against a pinned size and sha256; later runs re-check cheaply (size plus
a stamp file) instead of rehashing half a gigabyte every time.

The model is served by llama.cpp's own HTTP server, run inside this process
through the prebuilt ``xllamacpp`` wheel, on a free loopback port. Callers talk
to it through ``ChatOpenAI(base_url=...)`` exactly as they would to any remote
OpenAI-compatible endpoint, so local and remote share one code path.

Example:
    >>> from selfmoa.local import local_chat_model
    >>> chat = local_chat_model("local", temperature=0)  # doctest: +SKIP
    >>> chat.invoke("What is 17*3?").content  # doctest: +SKIP
    '17 * 3 = 51'

Nothing heavy happens at import time: ``xllamacpp`` and ``langchain_openai`` are
imported inside the functions that need them, and no server starts until asked.

One concern a module, each importing only the ones before it:

- ``catalog``: the known models, their names and aliases, the cache directory;
- ``progress``: the stderr lines and byte bar of a first run (``set_progress``);
- ``weights``: installed parts, joining them into the cache, sha256 stamps, ``model_path``;
- ``llamacpp``: importing ``xllamacpp`` and its server settings (threads, verbosity);
- ``connections``: loopback probes, the server's accepted sockets through /proc, a safe stop;
- ``process``: ``LocalServer``, the shared servers and closing them at exit;
- ``client``: ``local_chat_model``, the ``local`` provider and clients that revive a killed server.
"""

from selfmoa.local.catalog import (
    DEFAULT_LOCAL_MODEL,
    LOCAL_MODELS,
    LocalModel,
    LocalModelError,
    cache_dir,
    resolve_local_model,
)
from selfmoa.local.client import local_chat_model
from selfmoa.local.client import local_provider as local_provider  # loaded by name: "selfmoa.local:local_provider"
from selfmoa.local.llamacpp import DEFAULT_CTX_PER_SLOT as DEFAULT_CTX_PER_SLOT
from selfmoa.local.llamacpp import DEFAULT_SLOTS as DEFAULT_SLOTS
from selfmoa.local.llamacpp import DEFAULT_THREADS as DEFAULT_THREADS
from selfmoa.local.process import LocalServer, local_server, start_local_server
from selfmoa.local.progress import set_progress
from selfmoa.local.weights import list_local_models, model_path

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "LOCAL_MODELS",
    "LocalModel",
    "LocalModelError",
    "LocalServer",
    "cache_dir",
    "list_local_models",
    "local_chat_model",
    "local_server",
    "model_path",
    "resolve_local_model",
    "set_progress",
    "start_local_server",
]
