"""Helpers shared by the validators."""

from __future__ import annotations

_SEPARATORS = str.maketrans("", "", " -./\u00a0\t")


def digits_only(text: str) -> str:
    """``text`` without the separators ids are written with (space, dash, dot, slash)."""
    return text.translate(_SEPARATORS)


def is_ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def has_run(text: str, length: int) -> bool:
    """True when one character repeats ``length`` times in a row."""
    run = 1
    for prev, cur in zip(text, text[1:], strict=False):
        run = run + 1 if cur == prev else 1
        if run >= length:
            return True
    return length <= 1 and bool(text)


def is_sequence(digits: str) -> bool:
    """0123456789-style ascending or descending runs over the whole value."""
    if len(digits) < 4 or not is_ascii_digits(digits):
        return False
    steps = {(int(b) - int(a)) % 10 for a, b in zip(digits, digits[1:], strict=False)}
    return steps in ({1}, {9})
