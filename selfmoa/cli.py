"""The `selfmoa` command: run an ensemble on a prompt, list the local models.

    selfmoa run "What is 17*3?"                       # Self-MoA on the embedded model
    selfmoa run --method seq --samples 12 "..."       # Self-MoA-Seq
    selfmoa run --method moa --model local:smollm2-135m --model local --layers 2 "..."
    selfmoa run --spec hybrid.yaml --json "..."
    selfmoa models

Errors print one line on stderr that says how to fix them, and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from langchain_core.language_models import BaseChatModel

from selfmoa.graphs import (
    create_from_spec,
    create_moa,
    create_self_moa,
    create_self_moa_seq,
    load_spec_file,
    map_models,
    parse_spec,
)
from selfmoa.graphs.spec import MoASpec
from selfmoa.runtime import SelfMoAError, SpecError
from selfmoa.runtime.errors import describe_error, group_failures
from selfmoa.runtime.models import model_client
from selfmoa.runtime.secrets import redact

METHODS = ("self-moa", "moa", "seq")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line that points to --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"selfmoa: error: {message}; see '{self.prog} --help'\n")


def _shard(text: str) -> tuple[int, int]:
    """An argparse type: `I/N`, shard I of N counted from 0."""
    i, _, n = text.partition("/")
    try:
        shard = (int(i), int(n))
    except ValueError:
        shard = (-1, 0)
    if not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"takes I/N with 0 <= I < N, such as 0/2 and 1/2 for two processes, got {text!r}")
    return shard


def _at_least(minimum: int, kind: type = int, strict: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` of at least `minimum` (above it, if strict)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (strict and value == minimum) or value != value:  # NaN
            bound = f"above {minimum}" if strict else f"of at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'} {bound}, got {text!r}")
        return value

    return parse


def _report_name(text: str) -> str:
    """An argparse type: a report's file name, without directories or a suffix."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", text):
        raise argparse.ArgumentTypeError(f"must be a plain name such as 'patience' (letters, digits, - and _), got {text!r}")
    return text


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port from 0 (any free port) to 65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `selfmoa` command."""
    parser = _Parser(prog="selfmoa", description="Many LLM answers made into one better answer.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,models,serve,eval}")

    run = commands.add_parser("run", help="answer a prompt with an ensemble", description="Answer a prompt with an ensemble.")
    run.add_argument("prompt", help="the question; '-' reads it from standard input")
    # Defaults of the method-specific flags are None here and filled in by `check_run_flags`,
    # so that a flag the chosen method does not use is an error rather than silently ignored.
    run.add_argument("--method", choices=METHODS, help="ensemble method (default: self-moa)")
    run.add_argument(
        "--model",
        action="append",
        metavar="MODEL",
        help="proposer model, repeatable for moa (default: local). Forms: local, local:NAME, "
        "local:/path/model.gguf, openai:MODEL, openai:MODEL@BASE_URL, provider:model",
    )
    run.add_argument("--aggregator", metavar="MODEL", help="aggregator model (default: the first proposer model)")
    run.add_argument("--aggregate", choices=("synthesize", "select", "vote"),
                     help="how the samples become one answer: write a new one (synthesize, the default), "
                     "choose the most consistent sample (select), or take a majority vote (vote, no model call)")
    run.add_argument("--answer-of", choices=("number", "letter", "last_line"),
                     help="what --aggregate vote compares (default: the whole reply, normalised)")
    run.add_argument("--samples", type=_at_least(1), help="samples per run for self-moa and seq (default: 6)")
    run.add_argument("--layers", type=_at_least(1), help="layers of proposers for moa (default: 2)")
    run.add_argument("--window", type=_at_least(2), help="references per aggregation step for seq (default: 6)")
    run.add_argument("--reserved", type=_at_least(1), help="window slots repeating the synthesis for seq (default: 3)")
    run.add_argument("--patience", type=_at_least(1), metavar="P",
                     help="seq: stop drawing samples once the answer held P window steps in a row")
    run.add_argument("--spec", metavar="FILE", help="YAML or JSON ensemble spec; overrides --method and the models")
    run.add_argument("--temperature", type=_at_least(0, float), help="proposer temperature (default: 0.7)")
    run.add_argument("--seed", type=int, help="base seed, for reproducible samples")
    run.add_argument("--max-tokens", type=_at_least(1), default=512, help="most tokens per model reply (default: 512)")
    run.add_argument("--threads", type=_at_least(1), help="CPU threads of the embedded model (default: $SELFMOA_THREADS or 2)")
    run.add_argument("--timeout", type=_at_least(0, float, strict=True), help="seconds one model call may take")
    output = run.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print answer, proposals, usage and timings as JSON")
    output.add_argument("--stream", action="store_true", help="print the answer's tokens as they come")
    output.add_argument("--show-graph", action="store_true", help="print the graph as Mermaid and exit")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    run.set_defaults(func=run_command)

    models = commands.add_parser("models", help="list the embedded local models")
    models.add_argument("--json", action="store_true", help="print the list as JSON")
    models.set_defaults(func=models_command)

    serve = commands.add_parser(
        "serve", help="serve ensembles on an OpenAI-compatible endpoint", description="Serve ensembles on an "
        "OpenAI-compatible endpoint (/v1/chat/completions). Set SELFMOA_API_KEY to require a bearer token.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default: 8000)")
    serve.add_argument("--config", metavar="FILE", help="YAML file of named ensemble specs and server settings")
    serve.add_argument("--max-concurrency", type=_at_least(1), metavar="N", help="ensembles running at once (default: 4)")
    serve.add_argument("--queue", type=_at_least(0), metavar="N", help="requests waiting for a slot before 429 (default: 32)")
    serve.set_defaults(func=serve_command)

    ev = commands.add_parser(
        "eval", help="compare the methods on a benchmark task", description="Draw each item's samples once, "
        "then aggregate them every way (single, self-moa, moa, seq; synthesize, select, vote) on the same items "
        "and samples; cache draws and results in --out (a rerun resumes); write a Markdown "
        "table, a JSON file of all figures and PNG plots. Needs: pip install 'selfmoa[eval]'.",
    )
    ev.add_argument("--task", required=True, help="gsm8k, hellaswag, humaneval, rg-arithmetic or rg-basic-arithmetic")
    ev.add_argument("--methods", default="single,self-moa,moa,seq", help="comma-separated (default: all four)")
    ev.add_argument("--models", default="local", help="comma-separated; the first (A) is the strong model and "
                    "the aggregator (default: local)")
    ev.add_argument("--limit", type=_at_least(1), help="first N items of the task (default: all)")
    ev.add_argument("--skip", type=_at_least(0), default=0, metavar="N", help="leave out the first N of those items "
                    "(for example the items settings were chosen on): --skip 200 --limit 500 runs items 200-499")
    ev.add_argument("--shard", type=_shard, metavar="I/N", help="run only items I, I+N, I+2N, ... (0 <= I < N), so "
                    "that N processes or machines share one eval, also in one --out; then run without --shard "
                    "to report on all items")
    ev.add_argument("--samples", type=_at_least(1), default=6, help="samples k per ensemble (default: 6)")
    ev.add_argument("--samples-sweep", metavar="K,K,...", help="also run self-moa and seq with these k")
    ev.add_argument("--aggregations", default="synthesize,select,vote", metavar="MODES",
                    help="comma-separated aggregation modes to compare on the same samples (default: all three)")
    ev.add_argument("--patience", type=_at_least(1), help="also run seq stopping once its answer held this many steps")
    ev.add_argument("--workers", type=_at_least(1), default=4, help="aggregations of one item run at once (default: 4)")
    ev.add_argument("--window", type=_at_least(2), default=4, help="references per seq aggregation step (default: 4)")
    ev.add_argument("--reserved", type=_at_least(1), default=2, help="seq window slots repeating the synthesis (default: 2)")
    ev.add_argument("--temperature", type=_at_least(0, float), default=0.7, help="proposer temperature (default: 0.7)")
    ev.add_argument("--max-tokens", type=_at_least(1), help="most tokens per reply (default: the task's own)")
    ev.add_argument("--seed", type=int, default=0, help="base seed of the samples (default: 0)")
    ev.add_argument("--threads", type=_at_least(1), help="CPU threads of the embedded models")
    ev.add_argument("--out", default="results", help="directory for the cache, table, JSON and plots")
    ev.add_argument("--report", type=_report_name, default="results", metavar="NAME",
                    help="file names of the table and figures in --out: NAME.md, NAME.json (default: results)")
    ev.add_argument("--rescore", action="store_true", help="first score the cached answers again with the task's "
                    "current scorer (after a scorer fix; vote is recomputed from the cached samples); no model call")
    ev.add_argument("--no-diversity", action="store_true", help="skip the Vendi diversity (no embedding model)")
    ev.add_argument("--no-plots", action="store_true", help="write the table and JSON only")
    ev.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    ev.set_defaults(func=eval_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Example:
        >>> main(["run", "--show-graph", "hi"])  # doctest: +ELLIPSIS
        ---
        ...
        0
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return done.code if isinstance(done.code, int) else 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("selfmoa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `| head`); nothing left to say
        sys.stderr.close()
        return 141
    except (SelfMoAError, RuntimeError, ValueError, OSError) as exc:
        print(f"selfmoa: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SelfMoAError):
        return redact(" ".join(str(exc).split()))
    return describe_error(exc)


# --- selfmoa run ------------------------------------------------------------------------


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
            f"{total['output_tokens']} output tokens",
            file=progress,
        )
    if args.json:
        report = {key: final.get(key) for key in ("answer", "proposals", "aggregations", "usage", "warnings")}
        report.update({key: final[key] for key in ("stopped", "saved") if key in final})  # Self-MoA-Seq only
        report["timings"] = {"total_s": round(setup + elapsed, 3), "model_start_s": round(setup, 3), "run_s": round(elapsed, 3)}
        print(json.dumps(report, indent=2, ensure_ascii=False))
    elif args.stream:
        print()
    else:
        print(final["answer"])
    return 0


RUN_DEFAULTS: dict[str, Any] = {"method": "self-moa", "samples": 6, "layers": 2, "window": 6, "reserved": 3, "temperature": 0.7}
"""Defaults of `selfmoa run`'s method flags, applied by `check_run_flags` (the parser's are None)."""
_USED_BY = {"samples": ("self-moa", "seq"), "layers": ("moa",), "window": ("seq",), "reserved": ("seq",),
            "answer_of": ("self-moa", "moa", "seq"), "patience": ("seq",)}
# A spec file carries all of these itself; graph_from_args takes only the models' options from the flags.
_SET_BY_SPEC = ("method", "model", "aggregator", "aggregate", "answer_of", "samples", "layers", "window", "reserved",
                "patience", "temperature", "seed", "timeout")


def check_run_flags(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse flags the chosen method or spec would ignore, then fill in the defaults.

    Example:
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
    if getattr(args, "answer_of", None) and getattr(args, "aggregate", None) != "vote" and not getattr(args, "patience", None):
        raise SpecError("--answer-of is used by --aggregate vote and --patience only; drop it, or add one of them")
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


# --- selfmoa serve ----------------------------------------------------------------------


def serve_command(args: argparse.Namespace) -> int:
    """`selfmoa serve`: run the OpenAI-compatible server until interrupted."""
    try:
        import uvicorn  # noqa: F401 - checked here so that a missing extra is one line

        from selfmoa.server import serve
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("fastapi", "uvicorn", "starlette"):
            raise
        print(
            f"selfmoa: error: `selfmoa serve` needs {exc.name}, which is not installed: pip install 'selfmoa[server]'",
            file=sys.stderr,
        )
        return 2
    serve(args.host, args.port, args.config, max_concurrency=args.max_concurrency, queue=args.queue)
    return 0


# --- selfmoa eval -----------------------------------------------------------------------


def eval_command(args: argparse.Namespace) -> int:
    """`selfmoa eval`: run the methods on a task, resumably, and write the report."""
    try:
        from selfmoa.evals.cli import eval_main

        return eval_main(args)
    except ImportError as exc:  # the eval extra's packages are imported lazily, when needed
        if (exc.name or "selfmoa").split(".")[0] == "selfmoa":
            raise
        print(f"selfmoa: error: `selfmoa eval` needs {exc.name}, which is not installed: pip install 'selfmoa[eval]'",
              file=sys.stderr)
        return 2


# --- selfmoa models ---------------------------------------------------------------------


def models_command(args: argparse.Namespace) -> int:
    """`selfmoa models`: the embedded models, whether installed, size and path."""
    from selfmoa.local import list_local_models

    rows = list_local_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        names = ", ".join([row["name"], *row["aliases"]])
        state = "installed" if row["installed"] else f"not installed: {row['install']}"
        where = row["path"] or "not joined yet (joined on first use)"
        print(f"{names}\n  {row['description']} ({row['licence']}), {row['size'] / 1e6:.0f} MB, {state}\n  {where}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
