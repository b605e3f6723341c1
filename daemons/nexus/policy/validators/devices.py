"""Device and vehicle identifiers: VIN (ISO 3779 with the North American check digit)."""

from __future__ import annotations

_VIN_VALUES = dict(zip(
    "0123456789ABCDEFGHJKLMNPRSTUVWXYZ",
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9),
    strict=True,
))
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin(text: str) -> bool:
    """17 characters without I, O, Q, mixing letters and digits; check digit enforced for North America."""
    value = text.strip().upper()
    if len(value) != 17 or any(ch not in _VIN_VALUES for ch in value):
        return False
    if value.isdigit() or value.isalpha():
        return False
    if value[0] in "12345":
        total = sum(_VIN_VALUES[ch] * w for ch, w in zip(value, _VIN_WEIGHTS, strict=True))
        check = total % 11
        return value[8] == ("X" if check == 10 else str(check))
    return True
