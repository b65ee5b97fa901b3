"""`selfmoa run`: build the ensemble the flags describe, run it, report progress and print the answer.

The flags are defined by the parser in `selfmoa.cli`; this module checks them against the
chosen method, builds the graph, streams the run (progress on stderr, tokens with
--stream), and prints the answer, the JSON report or the summary line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from langchain_core.language_models import BaseChatModel

from selfmoa.graphs.hybrid import create_from_spec
from selfmoa.graphs.moa import create_moa
from selfmoa.graphs.self_moa import create_self_moa
from selfmoa.graphs.self_moa_seq import create_self_moa_seq
from selfmoa.graphs.spec import MoASpec, load_spec_file, map_models, parse_spec
from selfmoa.runtime.errors import SpecError, group_failures
from selfmoa.runtime.models import model_client


def run_command(args: argparse.Namespace) -> int:
    """`selfmoa run`: build the ensemble, run it, print the answer."""
    check_run_flags(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise SpecError("the prompt is empty; pass the question as an argument, or '-' to read it from stdin")
    # Built first with the model strings alone: that validates everything and draws the
    # graph before any client (or the embedded server) starts.
    unresolved = graph_from_args(args, lambda name, _: name)
    if args.show_graph:
        print(unresolved.compile().get_graph().draw_mermaid())
        return 0
    progress = None if args.quiet or args.json else sys.stderr
    if progress is None:
        from selfmoa.local import set_progress  # cheap: it imports nothing heavy

        set_progress(False)  # the embedded model's join and start lines are progress too
    # Making the clients starts embedded models (a first run also joins and hashes their files):
    # timed apart from the run, so that "done in" says where the seconds went.
    started = time.perf_counter()
    graph = graph_from_args(args).compile()
    ready = time.perf_counter()
    final = _run(graph, prompt, progress, stream_to=sys.stdout if args.stream else None)
    elapsed = time.perf_counter() - ready
    setup = ready - started
    if progress:
        for warning in final.get("warnings", []):
            print(f"warning: {warning}", file=progress)
        total = final["usage"]["total"]
        print(
            f"done in {setup + elapsed:.1f}s ({setup:.1f}s model start, {elapsed:.1f}s run): {total['calls']} calls, "
            f"{total['input_tokens']} input + "
            f"{total['output_tokens']} output tokens{agreement_note(final.get('agreement'))}",
            file=progress,
        )
        if final.get("abstained"):
            print(f"abstained: {final['abstained']}", file=progress)
    if args.json:
        report = {key: final.get(key) for key in ("answer", "proposals", "aggregations", "usage", "warnings", "agreement")}
        report.update({key: final[key] for key in ("stopped", "saved", "abstained", "escalated") if final.get(key)})
        report["timings"] = {"total_s": round(setup + elapsed, 3), "model_start_s": round(setup, 3), "run_s": round(elapsed, 3)}
        print(json.dumps(report, indent=2, ensure_ascii=False))
    elif args.stream:
        print()
    else:
        print(final["answer"])
    return 3 if final.get("abstained") else 0


def agreement_note(agreement: dict | None) -> str:
    """The summary line's note on how far the samples agree with the answer.

    Example:
        >>> agreement_note({"share": 4 / 6, "answer": "42", "counts": {"42": 4, "41": 2}, "samples": 6})
        "; 4 of 6 samples agree ('42', 0.67)"
        >>> agreement_note({"share": None, "answer": None, "counts": {"1": 1, "2": 1}, "samples": 2})
        '; no sample agrees with the answer (of 2)'
    """
    if not agreement:
        return ""
    if agreement["share"] is None:
        return f"; no sample agrees with the answer (of {agreement['samples']})"
    agreeing = round(agreement["share"] * agreement["samples"])
    return f"; {agreeing} of {agreement['samples']} samples agree ({agreement['answer']!r}, {agreement['share']:.2f})"


RUN_DEFAULTS: dict[str, Any] = {"method": "self-moa", "samples": 6, "layers": 2, "window": 6, "reserved": 3, "temperature": 0.7}
"""Defaults of `selfmoa run`'s method flags, applied by `check_run_flags` (the parser's are None)."""
_USED_BY = {"samples": ("self-moa", "seq"), "layers": ("moa",), "window": ("seq",), "reserved": ("seq",),
            "answer_of": ("self-moa", "moa", "seq"), "patience": ("seq",), "adaptive": ("self-moa", "moa"),
            "margin": ("self-moa", "moa"), "anchor": ("self-moa", "moa")}
# A spec file carries all of these itself; graph_from_args takes only the models' options from the flags.
_SET_BY_SPEC = ("method", "model", "aggregator", "aggregate", "answer_of", "samples", "layers", "window", "reserved",
                "patience", "temperature", "seed", "timeout", "adaptive", "margin", "anchor", "order", "abstain_below")


def check_run_flags(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse flags the chosen method or spec would ignore, then fill in the defaults.

    Example:
        >>> from selfmoa.cli import build_parser
        >>> args = build_parser().parse_args(["run", "--window", "4", "Hi"])
        >>> check_run_flags(args)
        Traceback (most recent call last):
        ...
        selfmoa.runtime.errors.SpecError: --window is not used by --method self-moa; drop it, or add --method seq
    """

    def flags(dests: list[str]) -> str:
        return ", ".join("--" + d.replace("_", "-") for d in dests)

    if args.spec:
        given = [d for d in _SET_BY_SPEC if getattr(args, d, None) is not None]
        if given:
            them = "it" if len(given) == 1 else "them"
            raise SpecError(
                f"{flags(given)} {'is' if len(given) == 1 else 'are'} not used with --spec, whose file sets the "
                f"method, models and their settings; drop {them}, or set {them} in the spec file"
            )
    else:
        method = args.method or RUN_DEFAULTS["method"]
        unused = [d for d, methods in _USED_BY.items() if getattr(args, d, None) is not None and method not in methods]
        if unused:
            users = sorted({m for d in unused for m in _USED_BY[d]})
            raise SpecError(
                f"{flags(unused)} {'is' if len(unused) == 1 else 'are'} not used by --method {method}; "
                f"drop {'it' if len(unused) == 1 else 'them'}, or add --method {' or '.join(users)}"
            )
        if method == "seq" and getattr(args, "aggregate", None) == "vote":
            # Said in the command's own words, before the spec would say it in the factory's.
            raise SpecError("--aggregate vote takes all samples at once and cannot slide a window; "
                            "use --aggregate synthesize or select with --method seq, or drop --method seq")
    if (getattr(args, "margin", None) or getattr(args, "anchor", None)) and not getattr(args, "adaptive", None):
        raise SpecError("--margin and --anchor set adaptive sampling; add --adaptive, or drop them")
    if getattr(args, "order", None) and getattr(args, "aggregate", None) != "select":
        raise SpecError("--order is how --aggregate select shows the candidates; add --aggregate select, or drop --order")
    for dest, default in RUN_DEFAULTS.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, default)
    return args


def graph_from_args(args: argparse.Namespace, make: Any = None):
    """The uncompiled graph the arguments describe; `make(name, args)` creates each model."""
    make = make or _make_model
    if args.spec:
        # A bad spec is reported (by parse_spec) before any model client is made.
        spec = _with_models(load_spec_file(args.spec), args, make)
        if spec.review:
            # The command runs to the end in one go: nothing could answer the review pause.
            raise SpecError(f"{args.spec}: review pauses the run for a caller, which selfmoa run cannot answer; "
                            "set review to false, or run the spec from Python with a checkpointer")
        return create_from_spec(spec)
    names = args.model or ["local"]
    models: dict[str, Any] = {}

    def model(name: str) -> Any:
        if name not in models:
            models[name] = make(name, args)
        return models[name]

    options: dict[str, Any] = {"temperature": args.temperature, "seed": args.seed}
    if getattr(args, "aggregate", None):
        options["mode"] = args.aggregate
    if getattr(args, "answer_of", None):
        options["answer_of"] = args.answer_of
    if args.timeout is not None:
        options["timeout"] = args.timeout
    if getattr(args, "order", None):
        options["order"] = args.order
    if getattr(args, "adaptive", None):
        options["adaptive"] = {"margin": args.margin or 2, "anchor": bool(args.anchor)}
    if getattr(args, "abstain_below", None) is not None:
        options["low_agreement"] = {"below": args.abstain_below, "action": "abstain"}
    aggregator = model(args.aggregator) if args.aggregator else None
    if args.method == "moa":
        layers = [[model(n) for n in names]] * args.layers
        return create_moa(layers, aggregator=aggregator or model(names[0]), **options)
    if len(names) > 1:
        raise SpecError(f"--method {args.method} takes one --model, got {len(names)}; use --method moa or --spec")
    if args.method == "seq":
        return create_self_moa_seq(
            model(names[0]), samples=args.samples, window=args.window, reserved=args.reserved, aggregator=aggregator,
            patience=args.patience, **options
        )
    return create_self_moa(model(names[0]), samples=args.samples, aggregator=aggregator, **options)


def _make_model(name: str, args: argparse.Namespace) -> BaseChatModel:
    # Enough parallel slots (embedded models) that every sample of a run decodes in one batch.
    slots = max(args.samples if args.method != "moa" else len(args.model or [1]), 1)
    return model_client(name, max_tokens=args.max_tokens, slots=slots, threads=args.threads)


def _with_models(spec: dict, args: argparse.Namespace, make: Any) -> MoASpec:
    # The spec's model strings become clients made with the command's options (--max-tokens).
    cache: dict[str, Any] = {}

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            if value not in cache:
                cache[value] = make(value, args)
            return cache[value]
        return value

    return map_models(parse_spec(spec), convert)


def _run(graph: Any, prompt: str, progress: TextIO | None, stream_to: TextIO | None) -> dict:
    """Run the graph, reporting proposals and window steps as they land."""
    modes = ["updates", "custom", "values"] + (["messages"] if stream_to else [])
    final: dict = {}
    done = 0
    failures = _Failures(progress)
    for mode, part in graph.stream({"messages": [("user", prompt)]}, stream_mode=modes):
        failures.flush()
        if mode == "values":
            final = part
        elif mode == "messages" and stream_to:
            stream_to.write(part[0].content if isinstance(part[0].content, str) else part[0].text)
            stream_to.flush()
        elif mode == "custom" and progress and isinstance(part, dict):
            if part.get("selfmoa") == "layer":
                print(f"layer {part['layer']}: {part['succeeded']} ok, {part['failed']} failed", file=progress)
                failures.close_group()
            elif part.get("selfmoa") == "window":
                print(f"window {part['batch'] + 1}: {part['succeeded']} new samples", file=progress)
            elif part.get("selfmoa") == "stopped" and part["stopped"] != "settled":
                print(f"{part['stopped']}: stopped drawing after {part['drawn']} samples, saving "
                      f"{part['saved']['proposals']} proposer calls", file=progress)
            elif part.get("selfmoa") == "stopped":
                saved = part["saved"]
                print(f"settled: the answer held for {part['streak']} more window step(s); stopped after {part['steps']} steps, "
                      f"saving {saved['proposals']} proposer and {saved['aggregations']} aggregator calls", file=progress)
        elif mode == "updates" and progress:
            for proposal in (part.get("propose") or {}).get("proposals", []):
                done += 1
                failures.add(proposal)
                status = "failed" if proposal["error"] else f"{proposal['usage']['output_tokens']} tokens"
                print(
                    f"  proposal {done} (layer {proposal['layer']}, {proposal['model']}, sample {proposal['sample']}) "
                    f"in {proposal['latency']:.1f}s, {status}",
                    file=progress,
                )
            for step in (part.get("aggregate") or {}).get("aggregations", []):
                print(f"  aggregation step {step['step'] + 1} in {step['latency']:.1f}s", file=progress)
    failures.close_group()
    failures.flush()
    return final


class _Failures:
    """Failed proposals, each distinct error said once ("6 of 6 proposals failed: ...").

    A layer's summary is printed when the run goes on past it: a run that stops there
    ends with the quorum error, which carries the same grouped text, on its one error line.
    """

    def __init__(self, progress: TextIO | None):
        self.progress, self.total = progress, 0
        self.failed: list[Any] = []
        self.note: str | None = None

    def add(self, proposal: dict) -> None:
        self.total += 1
        if proposal["error"]:
            self.failed.append(proposal)

    def close_group(self) -> None:
        if self.failed:
            self.note = f"  {group_failures(self.failed, self.total)}"
        self.failed, self.total = [], 0

    def flush(self) -> None:
        if self.note and self.progress:
            print(self.note, file=self.progress)
        self.note = None


__all__ = ["RUN_DEFAULTS", "check_run_flags", "graph_from_args", "run_command"]
