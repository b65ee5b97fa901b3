"""Write an eval's figures: results.md (table), results.json (all figures), PNG plots."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path
from typing import Any

from selfmoa.evals.metrics import Embedder, fit_quality_diversity, summarize


def build_report(by_config: dict[str, list[dict]], meta: dict[str, Any], embed: Embedder | None) -> dict[str, Any]:
    """All figures: one row per configuration, the quality–diversity fit, and the run's metadata."""
    rows = []
    computed: dict[tuple, str] = {}
    for name, records in by_config.items():
        row = {"config": name, **summarize(records, embed)}
        keys = tuple((r["item"], r["key"]) for r in records)
        if keys and keys in computed:
            row["same_as"] = computed[keys]  # e.g. seq whose window holds every sample = self-moa
        computed.setdefault(keys, name)
        rows.append(row)
    # A computation reported under two names counts once in the fit.
    fit = fit_quality_diversity([r for r in rows if r.get("items") and not r.get("same_as")])
    return {"meta": meta, "rows": rows, "fit": fit}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The results table in Markdown, with the fit and the run's metadata under it."""
    meta = report["meta"]
    lines = [
        f"# selfmoa eval: {meta['task']}",
        "",
        f"Models: {', '.join(meta['models'])} (A = first). Samples k = {meta['samples']}, "
        f"temperature {meta['temperature']}, max_tokens {meta['max_tokens']}, seed {meta['seed']}.",
        "",
        "| config | items | accuracy | proposal quality | diversity (Vendi) | calls/item | in tok/item "
        "| out tok/item | wall s/item | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        if not r.get("items"):
            lines.append(f"| {r['config']} | 0 | | | | | | | | |")
            continue
        same = f" (= {r['same_as']})" if r.get("same_as") else ""
        lines.append(
            f"| {r['config']}{same} | {r['items']} | {r['accuracy']:.3f} ({r['correct']}/{r['items']}) | {_fmt(r['quality'])} "
            f"| {_fmt(r['diversity'], 2)} | {r['calls_per_item']:.1f} | {r['input_tokens_per_item']:.0f} "
            f"| {r['output_tokens_per_item']:.0f} | {r['wall_s_per_item']:.1f} | {r['errors']} |"
        )
    fit = report["fit"]
    lines.append("")
    if "alpha" in fit:
        lines.append(
            f"Fit over {fit['configs']} configurations: accuracy ≈ {fit['alpha']:.3f}·quality + "
            f"{fit['beta']:.3f}·diversity + {fit['gamma']:.3f}, R² = {fit['r2']:.3f}. {fit['note']}".rstrip()
        )
    else:
        lines.append(f"No quality–diversity fit: {fit['note']}.")
    lines += ["", f"Command: `{meta['command']}`", "",
              f"Machine: {meta['machine']}. Date: {meta['date']}. Wall time of this invocation: {meta['elapsed_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def machine() -> str:
    """CPU count and model, for the record."""
    import os

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """PNG plots: accuracy per config, quality/diversity vs accuracy, accuracy vs samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r.get("items")]
    task = report["meta"]["task"]
    written = []

    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 3.6))
    ax.bar([r["config"] for r in rows], [r["accuracy"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(i, r["accuracy"], f"{r['accuracy']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{task}: accuracy per configuration (n={rows[0]['items'] if rows else 0})")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    written.append(out / "accuracy.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    pts = [r for r in rows if r.get("quality") is not None and not r.get("same_as")]
    if pts:
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
        title = (f"accuracy ≈ {fit['alpha']:.2f}·q + {fit['beta']:.2f}·d + {fit['gamma']:.2f}, R²={fit['r2']:.2f} "
                 f"({fit['configs']} configs)" if "alpha" in fit else f"no fit: {fit['note']}")
        fig.suptitle(f"{task}: quality vs diversity — {title}", fontsize=9)
        fig.tight_layout()
        written.append(out / "quality_diversity.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    series: dict[str, list[tuple[int, float]]] = {}
    k_main = report["meta"]["samples"]
    for r in rows:
        m = re.fullmatch(r"(self-moa|seq)(?: k=(\d+))?", r["config"])
        if m:
            series.setdefault(m.group(1), []).append((int(m.group(2) or k_main), r["accuracy"]))
    if any(len(v) >= 2 for v in series.values()):
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for name, pts_k in series.items():
            pts_k.sort()
            ax.plot([k for k, _ in pts_k], [a for _, a in pts_k], marker="o", label=name)
        single = next((r for r in rows if r["config"] == "single"), None)
        if single:
            ax.axhline(single["accuracy"], color="grey", linestyle="--", label="single (greedy)")
        ax.set_xlabel("samples k")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{task}: accuracy vs number of samples")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "samples.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def write_report(report: dict[str, Any], out: Path, *, with_plots: bool = True) -> list[Path]:
    """Write results.json, results.md and (optionally) the plots into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "results.md").write_text(markdown(report), encoding="utf-8")
    written = [out / "results.json", out / "results.md"]
    if with_plots:
        written += plots(report, out)
    return written
