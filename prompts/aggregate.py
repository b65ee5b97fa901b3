"""The aggregate-and-synthesize prompt.

Used in three places: by the final aggregator, by every proposer of an MoA layer after the
first (which refines the previous layer's answers), and by each step of the Self-MoA-Seq
sliding window. The meaning follows the aggregator prompt of the Mixture-of-Agents
reference implementation (Wang et al. 2024), kept by "Rethinking Mixture-of-Agents"
(Li et al. 2025, arXiv 2502.00674); the wording is this project's own.
"""

from __future__ import annotations

from collections.abc import Sequence

AGGREGATE_PROMPT = """\
Below are several candidate responses to the user's latest message, written by one or \
more AI assistants. Combine them into a single response of the highest quality.

Read the candidates critically: some may contain mistakes, bias, gaps or outdated \
information. Do not copy any one of them. Instead, work out what is right, keep the \
best ideas, fix what is wrong and write your own accurate, complete and well-organised \
answer that follows the user's instructions. Reply with that answer only.

Candidate responses:
{references}"""
"""System prompt for aggregation.

Placeholders:
    references: the numbered candidate responses, as produced by `format_references`.
"""


def format_references(texts: Sequence[str]) -> str:
    """Number candidate responses for the aggregation prompt.

    Args:
        texts: The candidate responses, in order.

    Returns:
        One block per response, numbered from 1, separated by blank lines.

    Example:
        >>> print(format_references(["Paris.", "It is Paris."]))
        [Response 1]
        Paris.
        <BLANKLINE>
        [Response 2]
        It is Paris.
    """
    return "\n\n".join(f"[Response {i}]\n{text.strip()}" for i, text in enumerate(texts, 1))
