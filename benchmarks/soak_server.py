"""Soak `selfmoa serve` on the real embedded model: many requests, a small queue, memory over time.

Starts `selfmoa serve` in a subprocess with a small queue, then sends REQUESTS chat
completions from CONCURRENCY clients at once. A client turned away with 429 waits for the
Retry-After it was given and sends the same request again. Prints:

- responses by status (the target: no 5xx);
- every 429 with its Retry-After (the target: sensible, growing with the queue);
- the server's resident memory (RSS) after the 10th and the 50th answered request, and the
  growth between them (the target: under 10%).

Run (needs the 'local' and 'server' extras; about 3 to 6 minutes on 2 cores):

    python -m benchmarks.soak_server            # or: python benchmarks/soak_server.py --requests 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

CONFIG = """
server:
  max_concurrency: {running}
  queue: {queue}
  max_tokens: {max_tokens}
  local_slots: 6
soak:
  layers: [[{{model: local, samples: 3}}]]
  temperature: 0.7
"""


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def soak(url: str, pid: int, requests: int, concurrency: int) -> dict:
    statuses: Counter[int] = Counter()
    retry_afters: list[tuple[int, int]] = []  # (queue length seen by /health, Retry-After)
    answered = 0
    rss: dict[int, float] = {}
    next_index = 0
    latencies: list[float] = []

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal next_index, answered
        while next_index < requests:
            i = next_index
            next_index += 1
            body = {"model": "soak", "messages": [{"role": "user", "content": f"Question {i}: what is {i} * 7?"}]}
            for _ in range(20):
                started = time.perf_counter()
                response = await http.post(f"{url}/v1/chat/completions", json=body)
                statuses[response.status_code] += 1
                if response.status_code != 429:
                    break
                health = (await http.get(f"{url}/health")).json()
                wait = int(response.headers["retry-after"])
                retry_afters.append((health["waiting"], wait))
                await asyncio.sleep(wait)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
                answered += 1
                if answered in (10, requests):
                    rss[answered] = rss_mb(pid)

    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return {"statuses": statuses, "retry_afters": retry_afters, "rss": rss, "latencies": latencies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--running", type=int, default=2, help="server max_concurrency")
    parser.add_argument("--queue", type=int, default=2, help="server queue")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args(argv)

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "soak.yaml"
        config.write_text(CONFIG.format(running=args.running, queue=args.queue, max_tokens=args.max_tokens))
        log = open(Path(tmp) / "serve.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "selfmoa.cli", "serve", "--port", str(port), "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    httpx.get(f"{url}/health", timeout=2)
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        print((Path(tmp) / "serve.log").read_text()[-2000:])
                        return 1
                    time.sleep(0.3)
            # One request first, so that starting the model is not part of the soak.
            warm = httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": "soak", "messages": [{"role": "user", "content": "Hi"}]},
                timeout=600,
            )
            print(f"warm-up: {warm.status_code}, RSS {rss_mb(proc.pid):.0f} MB")
            started = time.perf_counter()
            result = asyncio.run(soak(url, proc.pid, args.requests, args.concurrency))
            elapsed = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()

    statuses, rss = result["statuses"], result["rss"]
    five = sum(n for status, n in statuses.items() if status >= 500)
    print(
        f"{args.requests} requests, concurrency {args.concurrency}, server max_concurrency {args.running} "
        f"queue {args.queue}, max_tokens {args.max_tokens}: {elapsed:.0f} s"
    )
    print(f"responses by status: {dict(sorted(statuses.items()))}")
    print(f"5xx: {five}")
    waits = result["retry_afters"]
    print(f"429s: {len(waits)}; Retry-After (s) by waiting requests seen right after:")
    by_waiting: dict[int, list[int]] = {}
    for waiting, wait in waits:
        by_waiting.setdefault(waiting, []).append(wait)
    for waiting, values in sorted(by_waiting.items()):
        print(f"  {waiting} waiting: {sorted(values)}")
    lat = sorted(result["latencies"])
    if lat:
        print(f"latency of answered requests: median {lat[len(lat) // 2]:.1f} s, max {lat[-1]:.1f} s")
    if 10 in rss and args.requests in rss:
        growth = (rss[args.requests] - rss[10]) / rss[10] * 100
        print(f"server RSS: {rss[10]:.0f} MB at request 10, {rss[args.requests]:.0f} MB at request "
              f"{args.requests}: {growth:+.1f}% (target < 10%)")
    return 0 if five == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
