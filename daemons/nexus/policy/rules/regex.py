"""The Python side of a rule pattern: ``re`` flags, compilation and width.  Pure.

Hyperscan finds where a rule matches; Python ``re`` then finds the exact span
in a bounded window around each hit.  The two engines must agree, so the rule
flags map to both the same way: without ``ucp``, ``\\w``/``\\d``/``\\b`` are ASCII
in both; with it, Unicode in both.  A pattern with non-ASCII characters must
set ``utf8`` (so a class with a full-width colon means characters, not bytes); others
scan bytes, which keeps the Hyperscan database small, and differ from ``re``
only in counting a non-ASCII character of ``.`` or ``[^…]`` as several bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The longest span (in characters) a rule may match: it bounds the window the
# confirmation rescans and the tail a stream keeps across chunk borders.
MAX_WIDTH = 1024

_UNSUPPORTED = (
    ("(?=", "lookahead"),
    ("(?!", "negative lookahead"),
    ("(?<=", "lookbehind"),
    ("(?<!", "negative lookbehind"),
    ("(?>", "atomic group"),
    ("(?P=", "named backreference"),
    ("{,", "'{,n}' (a literal in Hyperscan, a quantifier in re)"),
)
_BACKREF = re.compile(r"(?<!\\)(?:\\\\)*\\[1-9]")
_PARSER = getattr(re, "_parser")  # noqa: B009  (sre_parse: its public alias warns on import)


class PatternError(ValueError):
    """The pattern is not usable by both engines."""


def python_flags(flags: Iterable[str]) -> int:
    names = set(flags)
    out = 0 if "ucp" in names else re.ASCII
    if "caseless" in names:
        out |= re.IGNORECASE
    if "dotall" in names:
        out |= re.DOTALL
    if "multiline" in names:
        out |= re.MULTILINE
    return out


def compile_python(pattern: str, flags: Iterable[str]) -> re.Pattern[str]:
    """Compile for span confirmation, checking the shared-syntax rules first."""
    for token, what in _UNSUPPORTED:
        if token in pattern:
            raise PatternError(f"{what} is not supported by Hyperscan")
    if _BACKREF.search(pattern):
        raise PatternError("backreferences are not supported by Hyperscan")
    try:
        return re.compile(pattern, python_flags(flags))
    except re.error as exc:
        raise PatternError(f"not a valid Python regular expression: {exc}") from None


def width(compiled: re.Pattern[str]) -> tuple[int, int]:
    """Shortest and longest possible match in characters (huge for unbounded repeats)."""
    lo, hi = _PARSER.parse(compiled.pattern, compiled.flags).getwidth()
    return int(lo), int(hi)


def check(pattern: str, flags: Iterable[str]) -> re.Pattern[str]:
    """Compile and check the width bounds; raises PatternError."""
    compiled = compile_python(pattern, flags)
    if not pattern.isascii() and not {"utf8", "ucp"} & set(flags):
        raise PatternError("a pattern with non-ASCII characters needs the utf8 flag")
    if set(compiled.groupindex) - {"v"}:
        raise PatternError("the only named group allowed is (?P<v>...), the reported value")
    lo, hi = width(compiled)
    if hi > MAX_WIDTH:
        raise PatternError(f"pattern may match up to {hi} characters; bound every repeat (max {MAX_WIDTH})")
    if lo == 0:
        raise PatternError("pattern can match the empty string")
    return compiled
