"""Durable runs: real PostgreSQL checkpointers, kill-and-resume, and no secrets in checkpoints.

The Postgres tests use a real throwaway server (the `postgres_url` fixture, see
tests/postgres_server.py); nothing is mocked. The kill-and-resume tests run the graph in a
child process (tests/resume_worker.py) that logs every model call durably, SIGKILL it once
some proposals are stored, and resume the thread in a new process.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
import resume_worker
from helpers import ask
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from openai_stub import OpenAIStub

from selfmoa import create_self_moa, create_self_moa_seq
from selfmoa.testing import FakeChatModel

WORKER = Path(resume_worker.__file__)
WAIT = 90.0
"""Longest wait, in seconds, for a child process to reach a point or to finish."""

SEQ_SCHEDULE = [list(range(6)), [6, 7, 8], [9, 10, 11]]  # N=12, W=6, R=3


def build(kind: str, model: FakeChatModel):
    if kind == "self_moa":
        return create_self_moa(model, samples=6)
    return create_self_moa_seq(model, samples=12, window=6, reserved=3)


def new_thread() -> dict:
    # One database serves the whole session, so every test takes a thread of its own.
    return {"configurable": {"thread_id": f"t-{uuid.uuid4().hex}"}}


def check_final(kind: str, state: dict, expected: dict) -> None:
    """A finished run holds every proposal and the answer, and matches an uncheckpointed run."""
    samples = 6 if kind == "self_moa" else 12
    assert [p["sample"] for p in state["proposals"]] == list(range(samples))
    assert all(p["error"] is None and p["text"] for p in state["proposals"])
    assert state["answer"] and state["messages"][-1].text == state["answer"]
    assert state["answer"] == expected["answer"]
    assert [p["text"] for p in state["proposals"]] == [p["text"] for p in expected["proposals"]]
    got = [a["sample_ids"] for a in state["aggregations"]]
    assert got == ([list(range(6))] if kind == "self_moa" else SEQ_SCHEDULE)


def check_history(history: list, samples: int) -> None:
    """Newest first, as LangGraph returns it: proposals only ever accumulate."""
    counts = [len(s.values.get("proposals", [])) for s in reversed(history)]
    assert counts == sorted(counts) and counts[-1] == samples
    nodes = [n for s in reversed(history) for n in s.next]
    assert "propose" in nodes and "aggregate" in nodes


# --- PostgreSQL -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["self_moa", "seq"])
def test_postgres_saver_runs_and_reads_back(postgres_url, kind):
    expected = build(kind, FakeChatModel(model="pg")).compile().invoke(ask())
    config = new_thread()
    with PostgresSaver.from_conn_string(postgres_url) as saver:
        saver.setup()
        out = build(kind, FakeChatModel(model="pg")).compile(checkpointer=saver).invoke(ask(), config)
    check_final(kind, out, expected)
    # Read back over a new connection: the state is in the database, not in this process.
    with PostgresSaver.from_conn_string(postgres_url) as saver:
        graph = build(kind, FakeChatModel(model="pg")).compile(checkpointer=saver)
        history = list(graph.get_state_history(config))
    assert history[0].next == ()
    check_final(kind, history[0].values, expected)
    check_history(history, len(expected["proposals"]))


@pytest.mark.parametrize("kind", ["self_moa", "seq"])
async def test_async_postgres_saver_runs_and_reads_back(postgres_url, kind):
    expected = await build(kind, FakeChatModel(model="apg")).compile().ainvoke(ask())
    config = new_thread()
    async with AsyncPostgresSaver.from_conn_string(postgres_url) as saver:
        await saver.setup()
        out = await build(kind, FakeChatModel(model="apg")).compile(checkpointer=saver).ainvoke(ask(), config)
    check_final(kind, out, expected)
    async with AsyncPostgresSaver.from_conn_string(postgres_url) as saver:
        graph = build(kind, FakeChatModel(model="apg")).compile(checkpointer=saver)
        history = [s async for s in graph.aget_state_history(config)]
    assert history[0].next == ()
    check_final(kind, history[0].values, expected)
    check_history(history, len(expected["proposals"]))


# --- kill and resume ------------------------------------------------------------------


class Worker:
    """Runs tests/resume_worker.py on one SQLite file and one call log."""

    def __init__(self, tmp_path: Path, kind: str, durability: str):
        self.kind, self.durability = kind, durability
        self.db, self.log, self.out = tmp_path / "c.db", tmp_path / "calls.log", tmp_path / "out.json"
        self.stderr = tmp_path / "stderr.txt"

    def command(self, phase: str, slow: list[str]) -> list[str]:
        return [sys.executable, str(WORKER), "--graph", self.kind, "--db", str(self.db), "--log", str(self.log),
                "--phase", phase, "--slow", ",".join(slow), "--slow-seconds", "300",
                "--durability", self.durability, "--out", str(self.out)]  # fmt: skip

    def start(self, slow: list[str]) -> subprocess.Popen:
        with open(self.stderr, "ab") as err:
            return subprocess.Popen(self.command("run", slow), stdout=subprocess.DEVNULL, stderr=err)

    def resume(self) -> dict:
        with open(self.stderr, "ab") as err:
            done = subprocess.run(self.command("resume", []), stdout=subprocess.DEVNULL, stderr=err, timeout=WAIT)
        assert done.returncode == 0, f"resume failed: {self.stderr.read_text()[-2000:]}"
        return json.loads(self.out.read_text())

    def events(self, phase: str, what: str = "call") -> Counter:
        """How often each (role, index) call started ("call") or returned ("done") in a phase."""
        text = self.log.read_text() if self.log.exists() else ""
        lines = text.split("\n")[:-1]  # complete lines only: the worker may be writing one
        return Counter(
            (role, int(index))
            for phase_, event, role, index in (line.split() for line in lines)
            if phase_ == phase and event == what
        )

    def stored(self) -> list[tuple[str, dict | None]]:
        """The tasks of the thread's latest checkpoint and the results stored for them."""
        if not self.db.exists():
            return []
        with closing(sqlite3.connect(self.db, timeout=10)) as conn:
            graph = resume_worker.build(self.kind, FakeChatModel(model="worker"))
            graph = graph.compile(checkpointer=SqliteSaver(conn))
            return [(t.name, t.result) for t in graph.get_state(resume_worker.THREAD).tasks]

    def stored_samples(self) -> set[int]:
        """Samples whose proposals the latest checkpoint holds (polled while the worker runs)."""
        try:
            stored = self.stored()
        except sqlite3.OperationalError:  # the worker is creating the database: not yet
            return set()
        return {p["sample"] for name, result in stored if name == "propose" and result for p in result["proposals"]}

    def wait_until(self, process: subprocess.Popen, condition, what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            if process.poll() is not None:
                pytest.fail(f"worker exited ({process.returncode}) before {what}: {self.stderr.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                process.kill()
                process.wait(timeout=WAIT)
                pytest.fail(f"no {what} after {WAIT:g}s; log: {self.log.read_text() if self.log.exists() else ''}")
            time.sleep(0.02)

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        if process.poll() is None:  # never signal a pid that may have been reused
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=WAIT)


def expected_run(kind: str) -> dict:
    """The final state of the same run, uninterrupted and without a checkpointer."""
    model = FakeChatModel(model="worker")
    state = resume_worker.build(kind, model).compile().invoke(ask(resume_worker.QUESTION))
    return json.loads(json.dumps(resume_worker.summary(state)))  # as the worker hands it over


def proposers(*samples: int) -> Counter:
    return Counter(("proposer", s) for s in samples)


@pytest.mark.parametrize("durability", ["async", "sync"])
def test_self_moa_killed_after_some_proposals_resumes_without_redoing_them(tmp_path, durability):
    worker = Worker(tmp_path, "self_moa", durability)
    process = worker.start(slow=["proposer:3", "proposer:4", "proposer:5"])
    try:
        # Wait for the stored writes, not the log: a call logged as done is in the
        # checkpoint only a few milliseconds later, and a kill in between loses it.
        worker.wait_until(process, lambda: worker.stored_samples() == {0, 1, 2}, "stored proposals 0-2")
        worker.wait_until(process, lambda: worker.events("run") == proposers(*range(6)), "all six proposer calls")
    finally:
        worker.kill(process)
    assert process.returncode == -signal.SIGKILL

    # What the killed process left: six proposer calls, three finished, no aggregation.
    assert worker.events("run", "done") == proposers(0, 1, 2)
    stored = worker.stored()
    assert [name for name, _ in stored] == ["propose"] * 6
    assert sorted(p["sample"] for _, result in stored if result for p in result["proposals"]) == [0, 1, 2]

    final = worker.resume()

    # Only the three unfinished proposals and the aggregator were called again.
    assert worker.events("resume") == proposers(3, 4, 5) + Counter({("aggregator", 0): 1})
    assert worker.events("resume", "done") == worker.events("resume")
    expected = expected_run("self_moa")
    assert [s for s, _, _ in final["proposals"]] == list(range(6))
    assert final["proposals"] == expected["proposals"]
    assert final["answer"] == final["last_message"] == expected["answer"] != ""
    assert final["aggregations"] == expected["aggregations"]
    assert final["calls"] == 7, "usage counts each of the 6 proposals and the aggregation once"


@pytest.mark.parametrize("kind", ["seq", "seq_latest"])
def test_self_moa_seq_killed_between_windows_resumes_on_schedule(tmp_path, kind):
    worker = Worker(tmp_path, kind, "async")
    # Superstep of window step 1: aggregator step 1 and proposal 11 hang, proposals 9 and 10 finish.
    in_flight = Counter({("aggregator", 1): 1, ("proposer", 11): 1})
    process = worker.start(slow=["aggregator:1", "proposer:11"])
    try:
        worker.wait_until(process, lambda: {9, 10} <= worker.stored_samples(), "stored proposals 9 and 10")
        worker.wait_until(process, lambda: worker.events("run") >= in_flight, "window step 1 and proposal 11")
    finally:
        worker.kill(process)
    assert process.returncode == -signal.SIGKILL

    run_calls = worker.events("run")
    assert run_calls == proposers(*range(12)) + Counter({("aggregator", 0): 1, ("aggregator", 1): 1})
    assert worker.events("run", "done") == run_calls - in_flight
    stored = worker.stored()
    assert sorted(name for name, _ in stored) == ["aggregate", "propose", "propose", "propose"]
    finished = [p["sample"] for name, result in stored if name == "propose" and result for p in result["proposals"]]
    assert sorted(finished) == [9, 10]

    final = worker.resume()

    # Window step 0 and samples 0-10 are not redone; step 1 and sample 11 are, then step 2.
    assert worker.events("resume") == Counter({("aggregator", 1): 1, ("proposer", 11): 1, ("aggregator", 2): 1})
    expected = expected_run(kind)
    assert final["proposals"] == expected["proposals"]
    steps = [
        ["window", 0, SEQ_SCHEDULE[0], 0],
        ["window", 1, SEQ_SCHEDULE[1], 3],
        ["window", 2, SEQ_SCHEDULE[2], 3],
    ]
    if kind == "seq_latest":  # only the last batch and window step are kept
        assert [s for s, _, _ in final["proposals"]] == SEQ_SCHEDULE[2]
        steps = steps[-1:]
    assert [a[:4] for a in final["aggregations"]] == steps
    assert final["aggregations"] == expected["aggregations"]
    assert final["answer"] == final["last_message"] == expected["answer"] != ""
    assert final["calls"] == 12 + 3


# --- no secrets in checkpoints --------------------------------------------------------


def sqlite_bytes(path: Path) -> bytes:
    """Every value of every table, plus the database files themselves."""
    with closing(sqlite3.connect(path)) as conn:
        tables = [name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")]
        assert {"checkpoints", "writes"} <= set(tables)
        rows = [row for table in tables for row in conn.execute(f'select * from "{table}"')]
    files = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    return _join(rows) + files


def postgres_bytes(url: str) -> bytes:
    """Every value of every table of the database."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "select table_name from information_schema.tables where table_schema = 'public'"
            )
        ]
        assert {"checkpoints", "checkpoint_blobs", "checkpoint_writes"} <= set(tables)
        rows = [row for table in tables for row in conn.execute(f'select * from "{table}"')]
    return _join(rows)


def _join(rows: list[tuple]) -> bytes:
    parts = []
    for row in rows:
        for value in row:
            if isinstance(value, (bytes, bytearray, memoryview)):
                parts.append(bytes(value))
            elif isinstance(value, (dict, list)):
                parts.append(json.dumps(value).encode())
            elif value is not None:
                parts.append(str(value).encode())
    return b"\n".join(parts)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_checkpoints_hold_no_api_key_and_no_model_client(store, tmp_path, monkeypatch, request):
    secret = f"sk-selfmoa-{uuid.uuid4().hex}"
    monkeypatch.setenv("SELFMOA_PERSISTENCE_KEY", secret)
    config = new_thread()
    with OpenAIStub(api_key=secret) as stub:
        label = f"openai:m@{stub.base_url}?key_env=SELFMOA_PERSISTENCE_KEY"
        graph = create_self_moa(label, samples=3, max_attempts=1)
        if store == "sqlite":
            db = tmp_path / "c.db"
            with SqliteSaver.from_conn_string(str(db)) as saver:
                out = graph.compile(checkpointer=saver).invoke(ask(), config)
            stored = sqlite_bytes(db)
        else:
            url = request.getfixturevalue("postgres_url")
            with PostgresSaver.from_conn_string(url) as saver:
                saver.setup()
                out = graph.compile(checkpointer=saver).invoke(ask(), config)
            stored = postgres_bytes(url)
    # The key was really used: every request carried it, and every call succeeded.
    assert stub.auth_headers and set(stub.auth_headers) == {f"Bearer {secret}"}
    assert [p["error"] for p in out["proposals"]] == [None] * 3 and out["answer"]
    # The checkpoints hold this run (its model label and its answer) ...
    assert label.encode() in stored and out["answer"].encode() in stored
    # ... but neither the key nor a serialized client.
    assert secret.encode() not in stored
    assert b"ChatOpenAI" not in stored and b"openai_api_key" not in stored
