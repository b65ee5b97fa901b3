"""The eval report's PNG plots: accuracy per configuration, quality and diversity against accuracy,
accuracy against samples, and accuracy against coverage when abstaining on low agreement."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from selfmoa.evals.metrics import r2_text

ENSEMBLE = re.compile(r"(self-moa|seq) k=(\d+) (synthesize|select|vote)")
"""A sampled ensemble's configuration name: method, k and mode."""


def plots(report: dict[str, Any], out: Path, prefix: str = "") -> list[Path]:
    """PNG plots: accuracy per config, quality/diversity vs accuracy, accuracy vs samples, coverage vs accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    rows = [r for r in report["rows"] if r.get("items")]
    written = [_accuracy_plot(report, rows, out / f"{prefix}accuracy.png")]
    written += _quality_diversity_plot(report, rows, out / f"{prefix}quality_diversity.png")
    written += _samples_plot(report, rows, out / f"{prefix}samples.png")
    return written + _coverage_plot(report, out / f"{prefix}coverage.png")


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _accuracy_plot(report: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 3.6))
    ax.bar([r["config"] for r in rows], [r["accuracy"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(i, r["accuracy"], f"{r['accuracy']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{report['meta']['task']}: accuracy per configuration (n={rows[0]['items'] if rows else 0})")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    return _save(fig, path)


def _quality_diversity_plot(report: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("quality") is not None and not r.get("same_as")]
    if not pts:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, key, label in ((axes[0], "quality", "proposal quality (mean sample accuracy)"),
                           (axes[1], "diversity", "diversity (Vendi score)")):
        sel = [r for r in pts if r.get(key) is not None]
        ax.scatter([r[key] for r in sel], [r["accuracy"] for r in sel])
        for r in sel:
            ax.annotate(r["config"], (r[key], r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)
    axes[0].set_ylabel("final accuracy")
    fit = report["fit"]
    title = (f"accuracy ≈ {fit['alpha']:.2f}·q + {fit['beta']:.2f}·d + {fit['gamma']:.2f}, {r2_text(fit)} "
             f"({fit['points']} sample sets)" if "alpha" in fit else f"no fit: {fit['note']}")
    fig.suptitle(f"{report['meta']['task']}: quality vs diversity — {title}", fontsize=9)
    return [_save(fig, path)]


def _samples_plot(report: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        m = ENSEMBLE.fullmatch(r["config"])
        if m and not r.get("same_as"):  # seq with every sample in one window is self-moa: drawn once
            k = int(m.group(2))
            series.setdefault(f"{m.group(1)} {m.group(3)}", []).append((k, r["accuracy"]))
            if m.group(1) == "self-moa" and r.get("oracle") is not None:
                series.setdefault("oracle (any sample right)", []).append((k, r["oracle"]))
                series.setdefault("mean sample", []).append((k, r["quality"]))
    if not any(len(v) >= 2 for v in series.values()):
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"oracle (any sample right)": ":", "mean sample": ":"}
    for name, pts_k in sorted(series.items()):
        pts_k = sorted(set(pts_k))
        ax.plot([k for k, _ in pts_k], [a for _, a in pts_k], marker="o", linestyle=styles.get(name, "-"), label=name)
    single = next((r for r in rows if r["config"] == "single"), None)
    if single:
        ax.axhline(single["accuracy"], color="grey", linestyle="--", label="single (greedy)")
    ax.set_xticks(sorted({k for pts_k in series.values() for k, _ in pts_k}))
    ax.set_xlabel("samples k")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{report['meta']['task']}: accuracy vs samples (n={rows[0]['items']} items, same samples for every "
                 "line)", fontsize=9)
    ax.legend(fontsize=7)
    return [_save(fig, path)]


def _coverage_plot(report: dict[str, Any], path: Path) -> list[Path]:
    """Accuracy against coverage when abstaining below a share of agreement, one panel per mode."""
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r.get("agreement") and not r.get("same_as")]
    if not rows:
        return []
    modes = [m for m in ("synthesize", "select", "vote") if any(f" {m}" in r["config"] for r in rows)] or ["all"]
    fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 3.8), sharey=True, squeeze=False)
    single = next((r for r in report["rows"] if r["config"] == "single" and r.get("items")), None)
    for ax, mode in zip(axes[0], modes, strict=True):
        for r in rows:
            if mode == "all" or f" {mode}" in r["config"]:
                curve = sorted(r["agreement"]["coverage"], key=lambda p: p["coverage"])
                ax.plot([p["coverage"] for p in curve], [p["accuracy"] for p in curve], marker="o", label=r["config"])
        if single:
            ax.axhline(single["accuracy"], color="grey", linestyle="--", label="single (greedy)")
        ax.set_title(mode, fontsize=9)
        ax.set_xlabel("coverage (items answered)")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("accuracy on the items answered")
    fig.suptitle(f"{report['meta']['task']}: abstaining when the samples' agreement is below a threshold", fontsize=9)
    return [_save(fig, path)]
