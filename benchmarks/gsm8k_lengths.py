"""Choose GSM8K's max_tokens: how long the embedded models' replies are when nothing cuts them.

A reply cut by max_tokens loses its final 'Answer:' line, so it is scored wrong whatever the
method; the eval's limit must be long enough for the models' whole solutions. This prints,
for each model, the output tokens of replies with a generous limit (greedy, and samples at
temperature 0.7), their percentiles, and how many would be cut at each candidate limit.
It runs on GSM8K items 51-100 of the fixture (`--first 50`), not on the first 50 that the
eval reports, so the choice is not made on the reported items.

    python benchmarks/gsm8k_lengths.py --items 12 --models local:qwen2.5-coder-1.5b,local:qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

CANDIDATES = (320, 384, 448, 512, 640, 768)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--first", type=int, default=50, help="items to skip (the reported ones)")
    parser.add_argument("--samples", type=int, default=2, help="samples at temperature 0.7 per item, besides greedy")
    parser.add_argument("--models", default="local:qwen2.5-coder-1.5b,local:qwen2.5-coder-0.5b")
    parser.add_argument("--limit", type=int, default=1024, help="max_tokens of the measuring replies")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    from langchain_core.messages import HumanMessage

    from selfmoa.evals.tasks.gsm8k import TASK
    from selfmoa.runtime.models import create_model

    items = TASK.load(args.first + args.items)[args.first :]
    for name in args.models.split(","):
        extra = {"threads": args.threads} if args.threads else {}
        model = create_model(name, max_tokens=args.limit, slots=6, **extra)
        jobs = [(item, 0.0, None) for item in items]
        jobs += [(item, 0.7, seed) for item in items for seed in range(args.samples)]
        started = time.perf_counter()

        def one(job: tuple, model=model) -> tuple[float, int, bool]:
            item, temperature, seed = job
            kwargs = {"temperature": temperature, **({"seed": seed} if seed is not None else {})}
            reply = model.invoke([HumanMessage(item.prompt)], **kwargs)
            return temperature, reply.usage_metadata["output_tokens"], TASK.score(item, reply.text)

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one, jobs))
        print(f"{name}: {len(items)} items, {len(results)} replies with max_tokens {args.limit} "
              f"({time.perf_counter() - started:.0f} s)")
        for label, temp in (("greedy", 0.0), ("T=0.7", 0.7)):
            lengths = sorted(n for t, n, _ in results if t == temp)
            right = sum(ok for t, _, ok in results if t == temp)
            if not lengths:
                continue
            pct = {q: lengths[min(len(lengths) - 1, int(q / 100 * len(lengths)))] for q in (50, 90)}
            cut = ", ".join(f"{c}: {sum(n >= c for n in lengths)}" for c in CANDIDATES)
            print(f"  {label}: {len(lengths)} replies, right {right}; output tokens median {pct[50]}, p90 {pct[90]}, "
                  f"max {lengths[-1]}; replies reaching the limit at {cut}")


if __name__ == "__main__":
    main()
