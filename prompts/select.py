"""The select prompt: the aggregator names the most consistent candidate instead of writing one.

This is universal self-consistency (USC; Chen et al. 2023, arXiv 2311.17311): the model
reads every candidate and picks the one that agrees most with the others, and the answer
is that candidate's text as it was written. For small models, choosing among the samples
can beat free-form synthesis (SLM-MUX, arXiv 2510.05077). The wording is this project's own.
"""

from __future__ import annotations

import re

SELECT_PROMPT = """\
Below are several candidate responses to the user's latest message. Do not answer the \
message yourself. Compare the candidates with each other and decide which one agrees \
most with the others on the final answer and the key facts; when several agree equally, \
prefer the most correct and complete of them.

Reply with only the number of that response, in the form "Response N".

Candidate responses:
{references}"""
"""System prompt of the `select` aggregation mode.

Placeholders:
    references: the numbered candidate responses, as produced by `format_references`.
"""

SELECT_ASK = """\
Which of the {count} candidate responses above agrees most with the others? Reply with only \
"Response N", where N is its number."""
"""The closing user message of a select call, after the conversation.

Small models answer the conversation's last user message rather than a system prompt:
asked a question last, Qwen2.5-Coder-0.5B answered it instead of choosing, on 3 of 3
calibration items (reasoning-gym seed 7, not the reported items); with this message last,
it named a candidate on 8 of 8.

Placeholders:
    count: how many candidate responses there are.
"""

# At most 9 digits: a reply's 5,000-digit number is no candidate, and never a huge int to parse.
_CHOICE = re.compile(r"(?:response|candidate|answer|option|#)\s*[:#]?\s*\[?(\d{1,9})(?!\d)", re.IGNORECASE)


def parse_choice(reply: str, count: int) -> int | None:
    """The 0-based candidate a select reply names, or None if it names none in 1..count.

    "Response 3" (or "candidate #3", "[Response 3]") is looked for first, then a reply that
    is a bare number; anything else is unparsable.

    Example:
        >>> parse_choice("Response 2", 3), parse_choice(" 3.", 3), parse_choice("Response 7", 3), parse_choice("the second", 3)
        (1, 2, None, None)
    """
    found = _CHOICE.findall(reply) or re.findall(r"^\W*(\d{1,9})\W*$", reply.strip())
    number = int(found[0]) if found else 0
    return number - 1 if 1 <= number <= count else None


SELECT_RETRY = """\
That reply did not name one of the {count} candidate responses. Reply with only \
"Response N", where N is a number from 1 to {count}."""
"""Follow-up message after a select reply that names no candidate.

Placeholders:
    count: how many candidate responses there are.
"""
