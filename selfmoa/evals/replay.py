"""A chat model that replays samples drawn once, so every aggregation sees the same samples.

The eval draws k samples per item and model once (sample i with seed `base + i`, as a
selfmoa graph with that base seed draws them). Each aggregation then runs the real graph
with this model as proposer: the graph asks for sample i with seed `base + i`, and gets
the text (and the usage) that the real model returned for it. The aggregator is the real
model, so comparisons between synthesize, select and vote are paired on identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class ReplayError(RuntimeError):
    """The replayed sample had failed when it was drawn."""


class ReplayChatModel(BaseChatModel):
    """Answers call `seed = base + i` with drawn sample i.

    Example:
        >>> m = ReplayChatModel(model="m", base=10, samples=[{"text": "a", "usage": {}}, {"text": "b", "usage": {}}])
        >>> m.invoke("q", seed=11).content
        'b'
    """

    model: str
    """The label of the model that drew the samples."""
    base: int
    samples: Sequence[dict[str, Any]]
    """Per sample: `text`, `usage` (input/output tokens) and, for a failed draw, `error`."""
    greedy: Sequence[dict[str, Any]] | None = None
    """The greedy draw (one sample), answered to a call at temperature 0 (adaptive's anchor)."""

    @property
    def _llm_type(self) -> str:
        return "selfmoa-replay"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        seed = kwargs.get("seed")
        if kwargs.get("temperature") == 0 and self.greedy:
            sample = self.greedy[0]
        elif seed is None or not 0 <= seed - self.base < len(self.samples):
            raise LookupError(f"no drawn sample for seed {seed} (base {self.base}, {len(self.samples)} drawn)")
        else:
            sample = self.samples[seed - self.base]
        if sample.get("error"):
            raise ReplayError(sample["error"])
        usage = sample.get("usage") or {}
        inp, out = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        message = AIMessage(sample["text"], usage_metadata={"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out})
        return ChatResult(generations=[ChatGeneration(message=message)])
