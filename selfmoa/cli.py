"""The `selfmoa` command: run an ensemble on a prompt, list the local models.

    selfmoa run "What is 17*3?"                       # Self-MoA on the embedded model
    selfmoa run --method seq --samples 12 "..."       # Self-MoA-Seq
    selfmoa run --method moa --model local:smollm2-135m --model local --layers 2 "..."
    selfmoa run --spec hybrid.yaml --json "..."
    selfmoa models

Errors print one line on stderr that says how to fix them, and exit non-zero.

This module holds the parser and `main`; the commands' bodies live in `selfmoa.commands`
(run, models) and `selfmoa.evals.cli` (eval).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from selfmoa.commands.models import models_command
from selfmoa.commands.run import run_command
from selfmoa.runtime.errors import SelfMoAError, describe_error
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
    _add_run(commands)
    _add_models(commands)
    _add_serve(commands)
    _add_eval(commands)
    return parser


def _add_run(commands: argparse._SubParsersAction[_Parser]) -> None:
    run = commands.add_parser("run", help="answer a prompt with an ensemble", description="Answer a prompt with an ensemble.")
    run.add_argument("prompt", help="the question; '-' reads it from standard input")
    # Defaults of the method-specific flags are None here and filled in by `check_run_flags` (in
    # selfmoa.commands.run), so that a flag the chosen method does not use is an error rather than silently ignored.
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
                     help="the short answer that vote, --patience, --adaptive and the agreement compare "
                     "(default: the whole reply, normalised)")
    run.add_argument("--adaptive", action="store_true", default=None, help="self-moa and moa: draw the samples 2 at a time and "
                     "stop once one short answer leads the next by --margin (up to --samples)")
    run.add_argument("--margin", type=_at_least(1), help="--adaptive: the lead that stops drawing (default: 2)")
    run.add_argument("--anchor", action="store_true", default=None, help="--adaptive: draw the first sample greedily (temperature 0)")
    run.add_argument("--order", choices=("shuffled", "both", "given"), help="--aggregate select: show the candidates "
                     "in a seeded shuffled order (default), in two orders, or as drawn")
    run.add_argument("--abstain-below", type=_at_least(0, float), metavar="SHARE", help="give no answer when fewer "
                     "than this share of the samples agree with it (exit status 3)")
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


def _add_models(commands: argparse._SubParsersAction[_Parser]) -> None:
    models = commands.add_parser("models", help="list the embedded local models")
    models.add_argument("--json", action="store_true", help="print the list as JSON")
    models.set_defaults(func=models_command)


def _add_serve(commands: argparse._SubParsersAction[_Parser]) -> None:
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


def _add_eval(commands: argparse._SubParsersAction[_Parser]) -> None:
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
    ev.add_argument("--select-orders", default="given", metavar="ORDERS", help="comma-separated: how select shows "
                    "the judge the candidates, one configuration each: given (as drawn), shuffled, both (default: given, "
                    "as in the committed reports)")
    ev.add_argument("--adaptive", metavar="RULES", help="also replay adaptive sampling with vote on the drawn samples, "
                    "comma-separated BATCH:MARGIN[:anchor] rules, e.g. 2:2,2:2:anchor (anchor: the greedy answer votes first)")
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
