"""Healthcare identifiers with check digits: US NPI and DEA numbers, UK NHS and Australian Medicare numbers."""

from __future__ import annotations

from nexus.policy.validators._common import digits_only, is_ascii_digits
from nexus.policy.validators.luhn import luhn_ok


def npi(text: str) -> bool:
    """US National Provider Identifier: 10 digits, Luhn over the 80840-prefixed number."""
    digits = digits_only(text)
    return len(digits) == 10 and is_ascii_digits(digits) and digits[0] in "12" and luhn_ok("80840" + digits)


def dea(text: str) -> bool:
    """US DEA registration number: two letters and seven digits with a weighted check digit."""
    value = text.strip().upper()
    if len(value) != 9 or not value[:2].isalpha() or not is_ascii_digits(value[2:]):
        return False
    d = [int(c) for c in value[2:]]
    return (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10 == d[6]


def nhs_number(text: str) -> bool:
    """UK NHS number: 10 digits, mod-11 check digit (a remainder giving 10 is never issued)."""
    digits = digits_only(text)
    if len(digits) != 10 or not is_ascii_digits(digits) or len(set(digits)) == 1:
        return False
    check = 11 - sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True)) % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(digits[9])


def au_medicare(text: str) -> bool:
    """Australian Medicare card number: first digit 2-6, weighted check digit in ninth place."""
    digits = digits_only(text)
    if len(digits) not in (10, 11) or not is_ascii_digits(digits) or digits[0] not in "23456":
        return False
    total = sum(int(d) * w for d, w in zip(digits[:8], (1, 3, 7, 9, 1, 3, 7, 9), strict=True))
    return total % 10 == int(digits[8])
