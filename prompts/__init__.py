"""Prompt templates used by the selfmoa nodes.

Every prompt is a named constant with its placeholders documented, so it can be read,
reviewed and overridden in one place.
"""

from selfmoa.prompts.aggregate import AGGREGATE_PROMPT, format_references
from selfmoa.prompts.select import SELECT_ASK, SELECT_PROMPT, SELECT_RETRY, parse_choice

__all__ = ["AGGREGATE_PROMPT", "SELECT_ASK", "SELECT_PROMPT", "SELECT_RETRY", "format_references", "parse_choice"]
