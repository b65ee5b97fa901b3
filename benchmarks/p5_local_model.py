"""P5 embedded model: 6 samples as one batch of concurrent requests (parallel slots) vs 6 sequential.

Runs the real default embedded model (`selfmoa.local.local_chat_model("local", slots=6)`,
Qwen2.5-Coder-0.5B-Instruct on llama.cpp, `SELFMOA_THREADS` CPU threads, default 2).
The same 6 seeded requests (temperature 0.7, `max_tokens` 64, a prompt that fills them)
are sent once one after another and once all at once, so llama.cpp decodes them as one
batch in its parallel slots. Target: the batch >= 2x the sequential throughput (tokens/s).

Run: python -m benchmarks.p5_local_model [--max-tokens 64] [--samples 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from benchmarks._common import finish, verdict

PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm. Do not stop early."


async def main(max_tokens: int, samples: int) -> list[int]:
    from selfmoa.local import local_chat_model

    started = time.perf_counter()
    model = local_chat_model("local", slots=samples, max_tokens=max_tokens, temperature=0.7)
    await model.ainvoke("Say hi.", max_tokens=4)  # starts the server, loads the weights
    print(f"model ready in {time.perf_counter() - started:.1f}s; threads {os.environ.get('SELFMOA_THREADS', '2')}")

    async def one(i: int) -> int:
        reply = await model.ainvoke(PROMPT, seed=i)
        return reply.usage_metadata["output_tokens"]

    started = time.perf_counter()
    seq_tokens = [await one(i) for i in range(samples)]
    seq = time.perf_counter() - started
    started = time.perf_counter()
    par_tokens = await asyncio.gather(*(one(i) for i in range(samples)))
    par = time.perf_counter() - started
    seq_rate, par_rate = sum(seq_tokens) / seq, sum(par_tokens) / par
    print(f"sequential: {samples} requests, {sum(seq_tokens)} tokens in {seq:.1f}s = {seq_rate:.1f} tokens/s")
    print(f"concurrent: {samples} requests, {sum(par_tokens)} tokens in {par:.1f}s = {par_rate:.1f} tokens/s")
    print(f"wall time ratio sequential / concurrent: {seq / par:.2f}x")
    return [verdict("P5 concurrent / sequential throughput", par_rate / seq_rate, 2.0, at_most=False)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--samples", type=int, default=6)
    args = parser.parse_args()
    finish(asyncio.run(main(args.max_tokens, args.samples)))
