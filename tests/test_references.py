"""Over-long references: trimmed to fit the aggregator's budget, with a warning, never dropped."""

from __future__ import annotations

from helpers import ask, by_role, system_text

from selfmoa import (
    create_moa,
    create_self_moa,
    create_self_moa_seq,
)
from selfmoa.nodes.calls import TRIM_MARK, trim_references
from selfmoa.testing import FakeChatModel

# --- huge references: trimmed to fit, with a warning, never dropped ----------------------------

HUGE = "word " * 40_000  # 200,000 characters


def _huge_on(sample: int):
    def reply(call) -> str:
        if call.role == "proposer" and call.sample == sample and not system_text(call):
            return HUGE
        return f"short answer {call.sample}"

    return reply


def test_trim_references_keeps_short_ones_whole_and_marks_the_cut():
    refs, warning = trim_references(["a" * 50, "b" * 1000, "c" * 2000], ["sample 0", "sample 1", "sample 2"], 1050)
    assert refs[0] == "a" * 50 and sum(len(r) for r in refs) <= 1050
    assert refs[1].endswith(TRIM_MARK) and refs[1].startswith("b" * 400) and len(refs[1]) == len(refs[2]) == 500
    assert "sample 1 from 1000 to 500 chars" in warning and "sample 2 from 2000 to 500 chars" in warning
    assert "sample 0" not in warning
    assert trim_references(["x" * 10], ["sample 0"], 100) == (["x" * 10], None)
    assert trim_references(["x" * 10], ["sample 0"], None) == (["x" * 10], None)


def test_huge_proposal_is_trimmed_for_the_aggregator_with_a_warning():
    model = FakeChatModel(reply=_huge_on(2))
    result = create_self_moa(model, samples=4, max_reference_chars=5_000).compile().invoke(ask())
    assert result["answer"]
    assert result["proposals"][2]["text"] == HUGE, "the full text stays in proposals"
    (aggregator,) = by_role(model, "aggregator")
    prompt = system_text(aggregator)
    assert len(prompt) < 5_000 + 2_000 and TRIM_MARK.strip() in prompt
    assert all(f"short answer {i}" in prompt for i in (0, 1, 3)), "nothing is dropped"
    (warning,) = result["warnings"]
    assert "sample 2 from 200000 to" in warning and "max_reference_chars" in warning


def test_default_budget_and_no_limit():
    model = FakeChatModel(reply=_huge_on(0))
    result = create_self_moa(model, samples=2).compile().invoke(ask())
    assert len(system_text(by_role(model, "aggregator")[0])) < 24_000 + 2_000 and result["warnings"]
    model = FakeChatModel(reply=_huge_on(0))
    result = create_self_moa(model, samples=2, max_reference_chars=None).compile().invoke(ask())
    assert HUGE.strip() in system_text(by_role(model, "aggregator")[0]) and result["warnings"] == []


def test_huge_proposal_in_a_sliding_window_and_in_a_middle_moa_layer():
    model = FakeChatModel(reply=_huge_on(4))
    graph = create_self_moa_seq(model, samples=8, window=4, reserved=2, max_reference_chars=3_000)
    result = graph.compile().invoke(ask())
    assert all(len(system_text(c)) < 3_000 + 2_000 for c in by_role(model, "aggregator"))
    assert len(result["warnings"]) == 1 and "aggregation step 1" in result["warnings"][0]
    assert "sample 4 from 200000" in result["warnings"][0]

    model = FakeChatModel(reply=_huge_on(1))
    result = create_moa([[model] * 3, [model] * 2], aggregator=model, max_reference_chars=3_000).compile().invoke(ask())
    second_layer = [c for c in by_role(model, "proposer") if system_text(c)]
    assert len(second_layer) == 2 and all(len(system_text(c)) < 3_000 + 2_000 for c in second_layer)
    assert ["layer 1 sample 1 from 200000" in w for w in result["warnings"]] == [True]


