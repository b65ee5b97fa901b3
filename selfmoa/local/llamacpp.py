"""The llama.cpp runtime: importing ``xllamacpp`` and its server settings, from the arguments and the environment.

``SELFMOA_THREADS`` sets the CPU threads (default 2), ``SELFMOA_LLAMA_VERBOSITY`` what
llama.cpp prints (default 0, silent). ``xllamacpp`` is imported on first use only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from selfmoa.local.catalog import LocalModelError
from selfmoa.local.progress import _say_more

DEFAULT_SLOTS = 6
DEFAULT_THREADS = 2
DEFAULT_CTX_PER_SLOT = 4096


def _verbosity() -> int:
    raw = os.environ.get("SELFMOA_LLAMA_VERBOSITY", "").strip() or "0"
    if not raw.isdigit():
        raise LocalModelError(f"SELFMOA_LLAMA_VERBOSITY must be 0 (silent), 1 (errors) or 3 (info), got {raw!r}")
    return int(raw)


def _resolve_threads(threads: int | None) -> int:
    if threads is None:
        env = os.environ.get("SELFMOA_THREADS", "").strip()
        if not env:
            return DEFAULT_THREADS
        try:
            threads = int(env)
        except ValueError:
            raise LocalModelError(f"SELFMOA_THREADS must be a positive integer, got {env!r}") from None
    if threads < 1:
        raise LocalModelError(f"threads must be >= 1, got {threads}")
    return threads


def _import_xllamacpp() -> Any:
    if "xllamacpp" not in sys.modules:
        # The wheel's llama.cpp uses OpenMP, whose workers spin-wait by
        # default. With 2 threads on a 2-core machine any other CPU load
        # (the graph's own Python, a test run) then stalls decoding badly:
        # measured here, 6 × 96 tokens took 82-289 s beside one busy process
        # instead of 23-28 s with passive waiting. libgomp reads this once,
        # when the library loads, so it must be set before the import; an
        # explicit user setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import xllamacpp
    except ImportError:
        raise LocalModelError(
            "the embedded model needs the llama.cpp runtime xllamacpp;"
            " install it with: pip install 'selfmoa[local]'"
        ) from None
    return xllamacpp


def _server_params(
    xl: Any, model_path: Path, model_name: str, *, slots: int, threads: int, ctx_per_slot: int
) -> Any:
    """The ``xllamacpp.CommonParams`` of a loopback server for one model, on a port the OS picks."""
    p = xl.CommonParams()
    p.model.path = str(model_path)
    p.model_alias = {model_name}
    p.hostnames = ["127.0.0.1"]  # loopback only: nothing outside this host
    p.port = 0  # the OS picks a free port; no race between probing and binding
    p.n_parallel = slots
    # llama.cpp splits n_ctx evenly across slots, so size the total from
    # the per-slot need (an aggregation prompt holds k answers + question).
    p.n_ctx = slots * ctx_per_slot
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    # Enough HTTP workers that `slots` concurrent requests never queue
    # in front of the scheduler.
    p.n_threads_http = slots + 2
    p.ui = False
    # Silent by default: clients get every request error over HTTP, and
    # llama.cpp's default prints hundreds of lines per run. 1 = errors,
    # 3 = info (what the C++ server would print).
    p.verbosity = _verbosity()
    return p


def _start_server(xl: Any, params: Any, failure: str) -> Any:
    """Start llama.cpp's server from ``params`` (this loads the model).

    On failure, end the progress line and raise ``failure`` with llama.cpp's reason.
    """
    try:
        return xl.Server(params)  # loads the model and starts serving
    except RuntimeError as e:
        _say_more(" failed")
        raise LocalModelError(f"{failure} ({e}); run with SELFMOA_LLAMA_VERBOSITY=1 to see why") from None
