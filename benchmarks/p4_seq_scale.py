"""P4 Self-MoA-Seq scale: N = 10, 100, 1000 samples (W=6, R=3) on the fake model.

Prints three series: the largest aggregator prompt (characters; must stay bounded, the
point of the sliding window), the bytes of the SQLite checkpoint file after the run
(should grow about linearly in N) and the wall time (about linear in N).
Targets, going from N=100 to N=1000 (10x): prompt size <= 1.1x, checkpoint bytes and wall
time <= 1.5 x 10x (that is, at most 50 % above linear).

Run: python -m benchmarks.p4_seq_scale [--sizes 10,100,1000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time

from benchmarks._common import finish, verdict
from selfmoa import create_self_moa_seq
from selfmoa.testing import FakeChatModel


def one_run(n: int, folder: str, durability: str = "sync") -> tuple[int, int, float, int]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    model = FakeChatModel()
    path = os.path.join(folder, f"seq-{n}-{durability}.sqlite")
    conn = sqlite3.connect(path, check_same_thread=False)
    graph = create_self_moa_seq(model, samples=n, window=6, reserved=3)
    graph = graph.compile(checkpointer=SqliteSaver(conn))
    started = time.perf_counter()
    config = {"configurable": {"thread_id": "t"}}
    result = graph.invoke({"messages": [("user", "Write a haiku about rivers.")]}, config, durability=durability)
    wall = time.perf_counter() - started
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.commit()
    conn.execute("VACUUM")
    conn.close()
    assert len(result["proposals"]) == n
    prompt = max(len(c.prompt) for c in model.calls if c.role == "aggregator")
    return prompt, os.path.getsize(path), wall, len(result["aggregations"])


def main(sizes: list[int]) -> list[int]:
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            rows[n] = one_run(n, folder)
        at_exit = {n: one_run(n, folder, "exit")[1] for n in sizes}
    header = ("N", "windows", "max aggregator prompt (chars)", "checkpoint bytes", "bytes/sample", "wall s")
    widths = (6, 8, 30, 17, 13, 8, 23)
    print(" ".join(f"{h:>{w}}" for h, w in zip((*header, "bytes, durability=exit"), widths)))
    for n, (prompt, size, wall, windows) in rows.items():
        print(f"{n:>6} {windows:>8} {prompt:>30} {size:>17} {size / n:>13.0f} {wall:>8.2f} {at_exit[n]:>23}")
    print(
        "Checkpoint bytes grow about quadratically with the default durability: the SQLite saver writes every "
        "channel's whole value into each checkpoint (one per superstep, about two per window step), and three "
        "channels grow with N (proposals, aggregations and the plan's per-sample slots). With "
        "durability='exit' (one checkpoint at the end, no mid-run resume) they grow linearly."
    )
    small, big = sizes[-2], sizes[-1]
    scale = big / small
    statuses = [
        verdict(f"P4 max prompt N={big} / N={small}", rows[big][0] / rows[small][0], 1.1),
        verdict(f"P4 wall N={big} / N={small} / {scale:g}", rows[big][2] / rows[small][2] / scale, 1.5),
        verdict(f"P4 checkpoint bytes N={big} / N={small} / {scale:g}", rows[big][1] / rows[small][1] / scale, 1.5),
    ]
    return statuses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    args = parser.parse_args()
    finish(main([int(s) for s in args.sizes.split(",")]))
