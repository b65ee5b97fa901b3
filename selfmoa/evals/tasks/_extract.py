"""The answer a reply states, and answer comparison, shared by the number tasks (rg-arithmetic, GSM8K).

Only a stated answer counts: a marked one ("Answer: X", "the answer is X", "#### X",
`\\boxed{X}`), or a reply that is nothing but an equation ("51 - 50 = 1"). The last number
of a working is never read as its answer: in a reply cut by `max_tokens` it is an
intermediate result, in a degenerate loop a number copied from the question. A reply that
states two different answers (a synthesis that echoes its candidates' answer lines, a
working that changes its mind) states none. Each task's `answer_of`, which `vote` counts,
is the extractor its scorer reads, so voting and scoring read a reply the same way.
(`selfmoa.nodes.answers.number`, the library's extractor, still falls back to the last
number: a vote that wants every sample's guess needs it; a scorer must not.)
"""

from __future__ import annotations

import re

from selfmoa.nodes.answers import canonical_number

_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_SIGNED = re.compile(r"(?<![\w.])([-+]?)\s*\$?\s*(" + _DIGITS + r")(?!\w)")
# After a number, an operator and an operand: the number starts an expression ("-4 - 0 * -7").
_OPERATION = re.compile(r"\s*\)*\s*[-+*/^]\s*[-+]?\s*[(\d.]")
_OPENED = re.compile(r"[-+*/^]\s*\(+\s*$")  # "-(-8)": the first number sits inside an expression
# "Answer:", "the answer is", "the answer to <the question> is", GSM8K's "#### 18".
_MARK = re.compile(r"\banswer\b(?:\s+(?:to|for|of)\b[^\n]{0,80}?\bis\b\s*:?|\s*(?:is\b\s*:?|:))|####(?=\s*[-+$\d])",
                   re.IGNORECASE)
_LATEX = [(re.compile(pattern), replacement) for pattern, replacement in (
    (r"\*\*", ""), ("\u2212", "-"), (r"\\\$", "$"), (r"\\(?:times|cdot)(?![A-Za-z])", "*"), (r"\\div(?![A-Za-z])", "/"),
    (r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1"), (r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)"),
    (r"\\%", "%"), (r"\\(?:left|right)(?![A-Za-z])|\\[,!; ]", ""), (r"\\[\[\]()]|\$", " "),
)]


def _plain(text: str) -> str:
    """`text` without markdown bold and LaTeX wrappers: `\\(\\frac{6}{2}\\)` is `(6)/(2)`, `\\$5` is `5`."""
    for pattern, replacement in _LATEX:
        text = pattern.sub(replacement, text)
    return text


def _boxed(text: str) -> tuple[list[str], str]:
    """The contents of every `\\boxed{...}` (braces may nest), and the text with each box replaced by its content."""
    contents, parts, end = [], [], 0
    for m in re.finditer(r"\\boxed\s*\{", text):
        if m.start() < end:
            continue  # a box inside a box: read as part of the outer one
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        contents.append(text[m.end():i - 1] if not depth else text[m.end():i])
        parts += [text[end:m.start()], contents[-1]]
        end = i
    return contents, "".join(parts) + text[end:]


def _number(match: re.Match[str]) -> str:
    return canonical_number(("-" if match.group(1) == "-" else "") + match.group(2).replace(",", ""))


def _stated(segment: str) -> tuple[bool, str] | None:
    """What a marked segment states: (True, a canonical number), (False, an expression as written), None (no number).

    The first number counts ("$11050 to fill 170 balloons" is 11050), unless it starts an
    expression: then the result after its last "=" counts, and an expression with no
    result is returned as written, so that a restated question is not read as its first term.
    """
    segment = _plain(segment).strip()
    first = _SIGNED.search(segment)
    if not first:
        return None
    if not _OPENED.search(segment[:first.start()]) and not _OPERATION.match(segment[first.end():]):
        return True, _number(first)
    *worked, result = re.split(r"=|\bequals\b", segment)
    if worked and (stated := _stated(result)):
        return stated
    return False, " ".join(segment.rstrip(" .!").split())


def _equation(text: str) -> str | None:
    """The result of a reply that is only an equation or a number, with no word ("51 - 50 = 1" is 1)."""
    text = _plain(text).strip()
    if re.search(r"[A-Za-z]", text) or not (last := re.fullmatch(r"(?:.*=)?\s*([-+]?)\s*(" + _DIGITS + r")\s*\.?",
                                                                   text, re.DOTALL)):
        return None
    return _number(last) if "=" in text or not re.search(r"\d\s*[-+*/^]", text) else None


def stated_answer(text: str | None) -> str | None:
    """The answer a reply states, written canonically; None when it states none, or two different ones.

    Marks are "Answer:", "answer is" ("the answer to ... is"), "####" and `\\boxed{}`; of a
    marked line, the first number counts, or the result after the last "=" when the line
    starts with an expression.
    A marked expression with no result ("Answer: -4 - 0 * -7") is returned as written
    (so it is not a number), unless a number is also stated. With no mark, only a reply
    that is nothing but an equation states its result; the last number of a working never counts.

    Example:
        >>> stated_answer("Answer: 25 - (-43) = 25 + 43 = 68."), stated_answer("the answer is:\\n\\\\[ \\\\boxed{-3.0} \\\\]")
        ('68', '-3')
        >>> stated_answer("Answer: +15"), stated_answer("Answer: $11,050 to fill 170 balloons")
        ('15', '11050')
        >>> stated_answer("Answer: -4 - 0 * -7"), stated_answer("51 - 50 = 1")
        ('-4 - 0 * -7', '1')
        >>> stated_answer("[Response 1]\\nAnswer: 54\\n[Response 2]\\nAnswer: -54") is None  # two answers
        True
        >>> stated_answer("4 + 30 = 34\\nSo the result is 34") is None  # no mark: a working, not an answer
        True
    """
    boxes, flat = _boxed(text or "")
    flat = _plain(flat)
    segments = list(boxes)
    for mark in _MARK.finditer(flat):
        line, _, after = flat[mark.end():].lstrip(" \t:*").partition("\n")
        if line.strip():
            segments.append(line)
        elif nxt := after.lstrip(" \t\n:*").partition("\n")[0]:  # "Answer:" above its number
            segments += [nxt] if _equation(nxt) is not None else []
    stated = [s for s in map(_stated, segments) if s]
    numbers = {value for is_number, value in stated if is_number}
    found = numbers or {value for _, value in stated}  # an expression counts only when no number is stated
    if found:
        return found.pop() if len(found) == 1 else None
    return _equation(text or "")


def same_number(a: str | None, b: str) -> bool:
    """Numeric equality of two answers ('18', '18.0' and '18.00' are equal).

    Example:
        >>> same_number("18", "18.00"), same_number("1200", "1,200"), same_number(None, "18")
        (True, True, False)
    """
    if a is None:
        return False
    try:
        return abs(float(a) - float(b.replace(",", ""))) < 1e-6
    except ValueError:
        return a.strip() == b.strip()
