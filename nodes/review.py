"""The optional `review` node: a human (or program) checks the proposals before aggregation."""

from __future__ import annotations

from typing import Any

from langgraph.types import interrupt

from selfmoa.nodes.state import MoAState
from selfmoa.runtime.errors import InputError


def review(state: MoAState) -> dict:
    """Pause the run and let the caller keep, edit or drop proposals.

    The interrupt's value lists the proposals the aggregator would see. Resume with
    `Command(resume=decision)`, where `decision` is one of:

    - `True`: aggregate them as they are (LangGraph 1.2 fails to resume with a falsy
      value such as `None` or `{}`, so `True` stands for "no change");
    - `{"drop": [sample, ...]}`: leave these samples out;
    - `{"edit": {sample: "new text", ...}}`: replace their texts;
    - both keys together (edits apply to the samples that are kept).

    A decision that cannot be applied pauses the run again, with the one-line reason in
    the interrupt value's `error`, so nothing is lost and the caller can decide again.

    Example:
        >>> from langgraph.checkpoint.memory import InMemorySaver
        >>> from langgraph.types import Command
        >>> from selfmoa import create_self_moa
        >>> from selfmoa.testing import FakeChatModel
        >>> graph = create_self_moa(FakeChatModel(), samples=3, review=True).compile(checkpointer=InMemorySaver())
        >>> config = {"configurable": {"thread_id": "1"}}
        >>> paused = graph.invoke({"messages": "Hi"}, config)
        >>> [p["sample"] for p in paused["__interrupt__"][0].value["proposals"]]
        [0, 1, 2]
        >>> graph.invoke(Command(resume={"drop": [1]}), config)["aggregations"][0]["sample_ids"]
        [0, 2]
    """
    proposals = [
        {"sample": i, "model": _model_of(state, i), "text": text}
        for i, text in zip(state.get("reference_ids", []), state.get("references", []), strict=True)
    ]
    error = None
    while True:
        # A bad decision pauses the run again with the error, rather than failing it: a
        # failed node would replay the same bad resume value on every retry.
        decision = interrupt({"selfmoa": "review", "proposals": proposals, "error": error})
        try:
            kept = apply_review(proposals, decision)
        except InputError as exc:
            error = str(exc)
            continue
        return {"references": [p["text"] for p in kept], "reference_ids": [p["sample"] for p in kept], "phase": "aggregate"}


def apply_review(proposals: list[dict], decision: Any) -> list[dict]:
    """The proposals after a review decision (see `review`); raises InputError on a bad one.

    Example:
        >>> apply_review([{"sample": 0, "text": "a"}, {"sample": 1, "text": "b"}], {"edit": {1: "B"}})
        [{'sample': 0, 'text': 'a'}, {'sample': 1, 'text': 'B'}]
    """
    if decision is None or decision is True:
        return proposals
    if not isinstance(decision, dict) or not set(decision) <= {"drop", "edit"}:
        raise InputError(
            f"review decision must be True or a dict with 'drop' and/or 'edit', got {decision!r}; "
            "e.g. Command(resume={'drop': [2], 'edit': {0: 'better text'}})"
        )
    samples = {p["sample"] for p in proposals}
    drop, edit = decision.get("drop") or [], decision.get("edit") or {}
    if not isinstance(drop, list | tuple) or not all(_is_sample(s) for s in drop):
        raise InputError(f"review 'drop' must be a list of sample numbers, got {drop!r}; e.g. {{'drop': [2]}}")
    if not isinstance(edit, dict) or not all(_is_sample(k) for k in edit):
        raise InputError(f"review 'edit' must map sample numbers to texts, got {edit!r}; e.g. {{'edit': {{0: 'better text'}}}}")
    # JSON (the server, Studio) turns the keys into strings; "0" names sample 0.
    drop, edit = [int(s) for s in drop], {int(k): v for k, v in edit.items()}
    unknown = sorted((set(drop) | set(edit)) - samples)
    if unknown:
        raise InputError(f"review names samples {unknown} that are not under review; choose from {sorted(samples)}")
    if any(not isinstance(v, str) or not v.strip() for v in edit.values()):
        raise InputError("review edits must be non-empty strings; use 'drop' to leave a proposal out")
    kept = [{**p, "text": edit.get(p["sample"], p["text"])} for p in proposals if p["sample"] not in set(drop)]
    if not kept:
        raise InputError("the review dropped every proposal; keep at least one, e.g. Command(resume=True)")
    return kept


def _is_sample(value: Any) -> bool:
    """A sample number: an int, or a string of digits as JSON gives a dict key."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdigit())


def _model_of(state: MoAState, sample: int) -> str:
    last = max((p["layer"] for p in state.get("proposals", [])), default=1)
    return next((p["model"] for p in state.get("proposals", []) if p["layer"] == last and p["sample"] == sample), "")
