"""P4 Self-MoA-Seq scale: N = 10, 100, 1000 samples (W=6, R=3) on the fake model.

Prints three series: the largest aggregator prompt (characters; must stay bounded, the
point of the sliding window), the bytes of the SQLite checkpoint file after the run
(should grow about linearly in N) and the wall time (about linear in N), with
`keep="latest"` (bounded state, the targets) and with the default `keep="all"` (every
proposal kept in the result; its checkpoints grow with N, for comparison).
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
from selfmoa.nodes.schedule import window_schedule
from selfmoa.testing import FakeChatModel


def one_run(n: int, folder: str, keep: str, durability: str = "sync") -> tuple[int, int, float, int]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    model = FakeChatModel()
    path = os.path.join(folder, f"seq-{n}-{keep}-{durability}.sqlite")
    conn = sqlite3.connect(path, check_same_thread=False)
    graph = create_self_moa_seq(model, samples=n, window=6, reserved=3, keep=keep)
    graph = graph.compile(checkpointer=SqliteSaver(conn))
    started = time.perf_counter()
    config = {"configurable": {"thread_id": "t"}}
    result = graph.invoke({"messages": [("user", "Write a haiku about rivers.")]}, config, durability=durability)
    wall = time.perf_counter() - started
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.commit()
    conn.execute("VACUUM")
    conn.close()
    assert len(model.calls) == n + len(schedule := window_schedule(n, 6, 3)), len(model.calls)
    assert len(result["proposals"]) == (n if keep == "all" else len(schedule[-1]))
    prompt = max(len(c.prompt) for c in model.calls if c.role == "aggregator")
    return prompt, os.path.getsize(path), wall, len(schedule)


def main(sizes: list[int]) -> list[int]:
    rows: dict[str, dict[int, tuple[int, int, float, int]]] = {"latest": {}, "all": {}}
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            for keep in rows:
                rows[keep][n] = one_run(n, folder, keep)
    header = ("N", "windows", "max aggregator prompt", "keep=latest bytes", "bytes/sample", "wall s",
              "keep=all bytes", "bytes/sample", "wall s")
    widths = (6, 8, 22, 18, 13, 7, 15, 13, 7)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for n in sizes:
        prompt, size, wall, windows = rows["latest"][n]
        _, all_size, all_wall, _ = rows["all"][n]
        print(f"{n:>6} {windows:>8} {prompt:>22} {size:>18} {size / n:>13.0f} {wall:>7.2f} "
              f"{all_size:>15} {all_size / n:>13.0f} {all_wall:>7.2f}")
    print(
        "keep='latest' keeps the latest batch and window step in the state, so every checkpoint (one per "
        "superstep, about two per window step) has the same size and the bytes grow linearly in N. With "
        "keep='all' (the default: every proposal in the result) the SQLite saver writes the growing "
        "`proposals` and `aggregations` lists into each checkpoint, so the bytes grow quadratically."
    )
    small, big = sizes[-2], sizes[-1]
    scale = big / small
    latest = rows["latest"]
    statuses = [
        verdict(f"P4 max prompt N={big} / N={small}", latest[big][0] / latest[small][0], 1.1),
        verdict(f"P4 wall N={big} / N={small} / {scale:g} (keep=latest)", latest[big][2] / latest[small][2] / scale, 1.5),
        verdict(
            f"P4 checkpoint bytes N={big} / N={small} / {scale:g} (keep=latest)",
            latest[big][1] / latest[small][1] / scale,
            1.5,
        ),
    ]
    return statuses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    args = parser.parse_args()
    finish(main([int(s) for s in args.sizes.split(",")]))
