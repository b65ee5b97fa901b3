"""Choose the reasoning-gym difficulty for the aggregation eval: greedy accuracy of a model per setting.

The eval's reasoning task should sit where one greedy answer of the embedded 0.5B model is
right 30-70% of the time, so that aggregation has room to help and to hurt. This prints the
greedy accuracy of each candidate setting of `basic_arithmetic` on its first N items (seed 7,
different from the eval's seed 42, so the choice is not made on the reported items).

    python benchmarks/rg_difficulty.py --items 40 --model local
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

CANDIDATES = {
    "default (2-6 terms, 1-4 digits)": {},
    "2-4 terms, 1-2 digits": {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2},
    "2-3 terms, 1-2 digits": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--model", default="local")
    args = parser.parse_args()
    import reasoning_gym
    from langchain_core.messages import HumanMessage

    from selfmoa.evals.tasks.reasoning_gym_task import INSTRUCTION, extract
    from selfmoa.runtime.models import create_model

    model = create_model(args.model, max_tokens=160, slots=6)
    for label, config in CANDIDATES.items():
        ds = reasoning_gym.create_dataset("basic_arithmetic", size=args.items, seed=7, **config)
        started = time.perf_counter()

        def one(i: int, ds=ds) -> bool:
            reply = model.invoke([HumanMessage(f"{ds[i]['question']}\n\n{INSTRUCTION}")], temperature=0).text
            return ds.score_answer(answer=extract(reply), entry=ds[i]) >= 1.0

        with ThreadPoolExecutor(6) as pool:
            right = sum(pool.map(one, range(args.items)))
        print(f"{label}: greedy {right}/{args.items} = {right / args.items:.2f} ({time.perf_counter() - started:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
