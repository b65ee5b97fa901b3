"""The body of `selfmoa eval` (the parser lives in `selfmoa.cli`)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from selfmoa.evals.cache import cut_aggregations, cut_replies, load_draws, rescore
from selfmoa.evals.report import build_report, machine, write_report
from selfmoa.evals.runner import EvalSettings, run_eval
from selfmoa.evals.tasks import get_task


def _ints(text: str | None) -> list[int]:
    try:
        return [int(x) for x in (text or "").split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--samples-sweep takes comma-separated integers such as 2,4,6, got {text!r}") from None


def _rules(text: str | None) -> list[tuple[int, int, bool]]:
    """`--adaptive` rules: BATCH:MARGIN[:anchor], comma-separated.

    Example:
        >>> _rules("2:2,1:3:anchor")
        [(2, 2, False), (1, 3, True)]
    """
    rules = []
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        fields = part.split(":")
        if len(fields) not in (2, 3) or not all(f.isdigit() and int(f) > 0 for f in fields[:2]) or fields[2:] not in ([], ["anchor"]):
            raise ValueError(f"--adaptive takes BATCH:MARGIN[:anchor] rules such as 2:2,2:2:anchor, got {part!r}")
        rules.append((int(fields[0]), int(fields[1]), fields[2:] == ["anchor"]))
    return rules


def eval_main(args: argparse.Namespace, embed=None) -> int:
    """Run the eval the arguments describe, then write the report; returns the exit status."""
    task = get_task(args.task)
    settings = EvalSettings(
        task=args.task,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        limit=args.limit, skip=args.skip, samples=args.samples, sweep=_ints(args.samples_sweep), temperature=args.temperature,
        max_tokens=args.max_tokens, seed=args.seed, window=args.window, reserved=args.reserved, threads=args.threads,
        aggregations=[m.strip() for m in args.aggregations.split(",") if m.strip()], patience=args.patience,
        workers=args.workers, shard=args.shard, adaptive=_rules(args.adaptive),
        orders=[o.strip() for o in args.select_orders.split(",") if o.strip()],
    )
    out = Path(args.out)
    if args.rescore:
        counts = rescore(out, task, args.task)
        if not args.quiet:
            print(f"rescored {args.out}: {counts['changed']} verdicts changed, {counts['votes']} vote records to "
                  "recompute from the cached samples", file=sys.stderr)
    started = time.perf_counter()
    by_config = run_eval(settings, out, task=task, progress=not args.quiet)
    if embed is None and not args.no_diversity:
        from selfmoa.evals.metrics import minilm_embedder

        embed = minilm_embedder()
    meta = {
        "task": args.task, "models": settings.models, "methods": settings.methods, "limit": args.limit, "skip": args.skip, "shard": args.shard,
        "samples": args.samples, "sweep": settings.sweep, "temperature": args.temperature,
        "max_tokens": args.max_tokens or task.max_tokens, "seed": args.seed, "window": args.window,
        "reserved": args.reserved, "aggregations": settings.aggregations, "patience": args.patience, "command": "selfmoa " + shlex.join(a for a in sys.argv[1:] if a != "--rescore") if sys.argv[1:2] == ["eval"]
        else "selfmoa eval ...", "machine": machine(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": time.perf_counter() - started,
    }
    items = sorted({r["item"] for records in by_config.values() for r in records})  # those the report covers
    draws = load_draws(out)
    meta["cut"] = cut_replies(draws, args.task, items, meta["max_tokens"], max([args.samples, *settings.sweep]))
    meta["cut_aggregations"] = cut_aggregations(draws, by_config, meta["max_tokens"], args.temperature, args.seed)
    report = build_report(by_config, meta, embed, answer_of=getattr(task, "answer_of", None))  # what vote reads
    written = write_report(report, out, with_plots=not args.no_plots, name=args.report)
    if not args.quiet:
        print((out / f"{args.report}.md").read_text(encoding="utf-8"), file=sys.stderr)
        print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0
