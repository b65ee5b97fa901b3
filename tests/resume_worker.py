"""Child process of the kill-and-resume tests (tests/test_persistence.py).

Runs Self-MoA (k=6) or Self-MoA-Seq (N=12, W=6, R=3; keeping every record or the latest
only) on a SQLite checkpointer, thread "t",
with a fake model that appends one line per call to a log file (flushed and fsynced, so
the lines survive a SIGKILL) and that sleeps long on the calls named by `--slow`:

    <phase> call <role> <index>     when a call starts
    <phase> done <role> <index>     when it returned

`<index>` is the sample of a proposer call and the window step of an aggregator call.
`--phase run` starts a new run; `--phase resume` continues the thread with
`graph.invoke(None, config)` and writes the final state as JSON to `--out`.

    python tests/resume_worker.py --graph self_moa --db c.db --log calls.log --phase run \
        --slow proposer:3,proposer:4,proposer:5
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Any

from langchain_core.runnables import RunnableConfig
from pydantic import PrivateAttr

from selfmoa import create_self_moa, create_self_moa_seq
from selfmoa.testing import FakeChatModel

THREAD = {"configurable": {"thread_id": "t"}}
QUESTION = "What is 17*3?"
GRAPHS = {
    "self_moa": {"samples": 6},
    "seq": {"samples": 12, "window": 6, "reserved": 3},
    "seq_latest": {"samples": 12, "window": 6, "reserved": 3, "keep": "latest"},
}


class LoggedModel(FakeChatModel):
    """`FakeChatModel` that logs each call durably and sleeps long on chosen calls."""

    log_path: str = ""
    phase: str = "run"
    slow: frozenset[str] = frozenset()
    """Calls that sleep `slow_seconds` first, as "role:index" (e.g. "proposer:3")."""
    slow_seconds: float = 0.0

    _log_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any):
        meta = (config or {}).get("metadata") or {}
        role = meta.get("selfmoa_role")
        index = meta.get("selfmoa_step" if role == "aggregator" else "selfmoa_sample")
        self._log(f"call {role} {index}")
        if f"{role}:{index}" in self.slow:
            time.sleep(self.slow_seconds)
        out = super().invoke(input, config, **kwargs)
        self._log(f"done {role} {index}")
        return out

    def _log(self, event: str) -> None:
        if not self.log_path:
            return
        with self._log_lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"{self.phase} {event}\n")
            f.flush()
            os.fsync(f.fileno())


def build(kind: str, model: FakeChatModel):
    """The uncompiled graph of a test run (one attempt per call, so counts are exact)."""
    factory = create_self_moa if kind == "self_moa" else create_self_moa_seq
    return factory(model, max_attempts=1, **GRAPHS[kind])


def summary(state: dict) -> dict:
    """The parts of a final state the tests compare (latencies vary from run to run)."""
    return {
        "answer": state["answer"],
        "last_message": state["messages"][-1].text,
        "proposals": [[p["sample"], p["text"], p["error"]] for p in state["proposals"]],
        "aggregations": [[a["kind"], a["step"], a["sample_ids"], a["reserved"], a["text"]] for a in state["aggregations"]],
        "calls": state["usage"]["total"]["calls"],
    }


def main() -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", choices=sorted(GRAPHS), required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--phase", choices=["run", "resume"], required=True)
    parser.add_argument("--slow", default="", help="comma-separated role:index calls that sleep long")
    parser.add_argument("--slow-seconds", type=float, default=120.0)
    parser.add_argument("--durability", choices=["sync", "async", "exit"], default="async")
    parser.add_argument("--out", help="where --phase resume writes the final state as JSON")
    args = parser.parse_args()

    model = LoggedModel(
        model="worker",
        log_path=args.log,
        phase=args.phase,
        slow=frozenset(s for s in args.slow.split(",") if s),
        slow_seconds=args.slow_seconds,
    )
    with SqliteSaver.from_conn_string(args.db) as saver:
        graph = build(args.graph, model).compile(checkpointer=saver)
        if args.phase == "run":
            graph.invoke({"messages": [("user", QUESTION)]}, THREAD, durability=args.durability)
            return
        out = graph.invoke(None, THREAD, durability=args.durability)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(summary(out), f)


if __name__ == "__main__":
    main()
