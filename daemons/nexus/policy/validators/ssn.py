"""US Social Security and Individual Taxpayer Identification Numbers (SSA structure rules)."""

from __future__ import annotations

from nexus.policy.validators._common import digits_only, is_ascii_digits

# Numbers the SSA voided after they were printed on sample cards and widely misused.
_VOIDED = frozenset({"078051120", "219099999", "457555462"})


def ssn(text: str) -> bool:
    """Area 001-665 or 667-899, group 01-99, serial 0001-9999; not a run of one digit."""
    digits = digits_only(text)
    if len(digits) != 9 or not is_ascii_digits(digits):
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return digits not in _VOIDED and len(set(digits)) > 1


def itin(text: str) -> bool:
    """ITIN: 9xx-[50-65 | 70-88 | 90-92 | 94-99]-xxxx."""
    digits = digits_only(text)
    if len(digits) != 9 or not is_ascii_digits(digits) or digits[0] != "9":
        return False
    group = int(digits[3:5])
    return (50 <= group <= 65 or 70 <= group <= 88 or 90 <= group <= 92 or 94 <= group <= 99) and digits[5:] != "0000"
