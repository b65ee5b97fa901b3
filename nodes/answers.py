"""Answer extractors: the short answer inside a long reply, for voting and for noticing
that a running synthesis has settled.

An extractor maps a reply to its answer (a short normalised string) or None when it finds
none. Specs name the built-in ones (`number`, `letter`, `last_line`), so they fit in YAML;
in Python any callable `str -> str | None` works too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

AnswerOf = Callable[[str], "str | None"]
"""Maps a reply to its short answer, or None when it has none."""

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_MARKED = re.compile(r"(?:answer\s*(?:is|:)|####|\\boxed\{)\s*\**\s*\$?\s*(" + _NUMBER + ")", re.IGNORECASE)
# A lower-case letter counts only when it stands alone ("is b.", "(b)"): "the answer is a man" is prose.
_LETTER_MARKED = re.compile(
    r"(?i:answer)\s*(?:(?i:is)\s*)?[:\s]*\**\(?(?:([A-J])\b|([a-j])(?:\)|(?=[.,;!]?\s*$)))", re.MULTILINE
)
_LETTER_LINE = re.compile(r"^\W*\(?(?:([A-J])(?:[).:\s]|$)|([a-j])(?:\)|$))")  # "b)" or "b" alone, not "a cat"


def number(text: str) -> str | None:
    """The final number: after the last "Answer:", "answer is", "####" or "\\\\boxed{",
    else the last number in the text, written canonically ("1,200.50" -> "1200.5").

    Example:
        >>> number("3 + 4 = 7 apples. Answer: $1,200.50"), number("so 18.0 left"), number("none")
        ('1200.5', '18', None)
    """
    text = text.replace("**", "")
    found = _MARKED.findall(text) or re.findall(_NUMBER, text)
    if not found:
        return None
    return canonical_number(found[-1].replace("$", "").replace(",", ""))


def canonical_number(raw: str) -> str:
    """A number written one way: no trailing zeros, no exponent, no minus on zero.

    Example:
        >>> canonical_number("18.0"), canonical_number("-0"), canonical_number("1200.50")
        ('18', '0', '1200.5')
        >>> len(canonical_number("9" * 5000))  # a reply's 5,000-digit number stays as written
        5000
    """
    if len(raw) > 40:  # beyond any real answer: kept as written, not turned into a huge int
        return raw
    try:
        value = Decimal(raw).normalize()
    except InvalidOperation:  # pragma: no cover - callers pass what a number pattern matched
        return raw
    return format(value, "f") if value != value.to_integral() else str(int(value))


def letter(text: str) -> str | None:
    """The chosen option letter (A-J) of a multiple-choice reply, upper case.

    Looks for "Answer: B" / "the answer is (B)" first, then a line that starts with a
    letter ("B) ...", "(C)"), taking the last one found.

    Example:
        >>> letter("Option two fits.\\nAnswer: (b)"), letter("C) because it rains"), letter("c"), letter("a cat")
        ('B', 'C', 'C', None)
        >>> letter("The answer is: D"), letter("the answer is b."), letter("The answer is a man who jumps")
        ('D', 'B', None)
    """
    marked = _LETTER_MARKED.findall(text.replace("**", ""))
    if marked:
        return "".join(marked[-1]).upper()
    starts = [m.group(1) or m.group(2) for line in text.splitlines() if (m := _LETTER_LINE.match(line.strip()))]
    return starts[-1].upper() if starts else None


def last_line(text: str) -> str | None:
    """The last non-empty line, with whitespace collapsed and case folded.

    Example:
        >>> last_line("Let me think.\\n\\n  The Answer is  PARIS \\n")
        'the answer is paris'
    """
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    return lines[-1].casefold() if lines else None


def normalized(text: str) -> str | None:
    """The whole text with whitespace collapsed and case folded (None when empty).

    Example:
        >>> normalized("  Paris\\n is the  capital. ") == normalized("paris is the CAPITAL.")
        True
    """
    out = " ".join(text.split()).casefold()
    return out or None


EXTRACTORS: dict[str, AnswerOf] = {"number": number, "letter": letter, "last_line": last_line}
"""Built-in extractors by the name a spec uses."""


def answer_extractor(answer_of: str | AnswerOf | None, default: AnswerOf = normalized) -> AnswerOf:
    """The extractor a spec names, a callable as given, or `default` for None.

    Raises:
        ValueError: For an unknown name, listing the known ones.

    Example:
        >>> answer_extractor("number")("x = 4")
        '4'
    """
    if answer_of is None:
        return default
    if callable(answer_of):
        return answer_of
    if answer_of in EXTRACTORS:
        return EXTRACTORS[answer_of]
    raise ValueError(
        f"unknown answer extractor {answer_of!r}; use one of {', '.join(EXTRACTORS)}, or a callable in Python"
    )


def vote(texts: Sequence[str | None], answer_of: AnswerOf) -> tuple[int | None, dict[str, int]]:
    """Majority vote over the answers of `texts` (None marks a failed sample).

    Returns the index of the first text whose answer won (ties go to the answer seen
    first), and the vote counts in first-seen order; (None, {}) when no text has an answer.

    Example:
        >>> vote(["x=4", "it is 5", None, "so 5"], number)
        (1, {'4': 1, '5': 2})
        >>> vote(["5", "4", "4", "5"], number)[0]  # a tie goes to the earliest sample
        0
    """
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        answer = answer_of(text) if text else None
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        first.setdefault(answer, i)
    if not counts:
        return None, {}
    best = max(counts, key=lambda a: (counts[a], -first[a]))
    return first[best], counts
