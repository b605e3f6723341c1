"""Helpers shared by the validators."""

from __future__ import annotations

import functools
import itertools
import re

_SEPARATORS = str.maketrans("", "", " -./\u00a0\t")


def digits_only(text: str) -> str:
    """``text`` without the separators ids are written with (space, dash, dot, slash)."""
    return text.translate(_SEPARATORS)


def is_ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


@functools.cache
def _run_pattern(length: int) -> re.Pattern[str]:
    return re.compile(rf"(.)\1{{{length - 1}}}", re.DOTALL)


def has_run(text: str, length: int) -> bool:
    """True when one character repeats ``length`` times in a row."""
    return _run_pattern(max(1, length)).search(text) is not None


def is_sequence(digits: str) -> bool:
    """0123456789-style ascending or descending runs over the whole value."""
    if len(digits) < 4 or not is_ascii_digits(digits):
        return False
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(digits)}
    return steps in ({1}, {9})
