"""National identity and tax numbers with published check digits or structure rules."""

from __future__ import annotations

import datetime

from nexus.policy.validators._common import digits_only, is_ascii_digits
from nexus.policy.validators.luhn import luhn_ok

_STRIP = str.maketrans("", "", " -./\u00a0")


def _clean(text: str) -> str:
    return text.translate(_STRIP).upper()


def uk_nino(text: str) -> bool:
    """UK National Insurance number: two prefix letters (HMRC exclusions), six digits, suffix A-D."""
    value = _clean(text)
    if len(value) != 9 or not value.isascii():
        return False
    first, second, digits, suffix = value[0], value[1], value[2:8], value[8]
    if not (first.isalpha() and second.isalpha() and digits.isdigit() and suffix in "ABCD"):
        return False
    if first in "DFIQUV" or second in "DFIOQUV":
        return False
    return value[:2] not in ("BG", "GB", "KN", "NK", "NT", "TN", "ZZ") and len(set(digits)) > 1


def de_tax_id(text: str) -> bool:
    """German Steuerliche Identifikationsnummer: 11 digits, ISO 7064 mod 11,10, one digit repeated."""
    digits = digits_only(text)
    if len(digits) != 11 or not is_ascii_digits(digits) or digits[0] == "0":
        return False
    counts = sorted((digits[:10].count(d) for d in set(digits[:10])), reverse=True)
    if counts[0] not in (2, 3) or (counts[1:] and counts[1] > 1):
        return False
    product = 10
    for ch in digits[:10]:
        total = (int(ch) + product) % 10 or 10
        product = total * 2 % 11
    check = (11 - product) % 10
    return check == int(digits[10])


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_dni(text: str) -> bool:
    """Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter): mod 23 letter."""
    value = _clean(text)
    if len(value) != 9 or not value.isascii():
        return False
    head = value[:8]
    if head[0] in "XYZ":
        head = str("XYZ".index(head[0])) + head[1:]
    if not head.isdigit() or int(head) == 0:
        return False
    return _DNI_LETTERS[int(head) % 23] == value[8]


_CF_ODD = dict(zip(
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    (1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16,
     10, 22, 25, 24, 23),
    strict=True,
))
_CF_SHAPE = "LLLLLLDDLDDLDDDL"
_CF_OMOCODE = "LMNPQRSTUV"


def it_codice_fiscale(text: str) -> bool:
    """Italian codice fiscale: 16-character shape (with omocodia letters) and its check character."""
    value = _clean(text)
    if len(value) != 16 or not value.isascii() or not value.isalnum():
        return False
    for ch, kind in zip(value, _CF_SHAPE, strict=True):
        if kind == "L" and not ch.isalpha():
            return False
        if kind == "D" and not (ch.isdigit() or ch in _CF_OMOCODE):
            return False
    if value[8] not in "ABCDEHLMPRST":
        return False
    total = 0
    for i, ch in enumerate(value[:15]):
        total += _CF_ODD[ch] if i % 2 == 0 else (int(ch) if ch.isdigit() else ord(ch) - 65)
    return chr(65 + total % 26) == value[15]


def fr_nir(text: str) -> bool:
    """French NIR (numéro de sécurité sociale): 13 characters (2A/2B for Corsica) and a mod-97 key."""
    value = _clean(text)
    if len(value) != 15 or not value.isascii():
        return False
    body, key = value[:13], value[13:]
    if not key.isdigit() or body[0] not in "12378":
        return False
    # Corsica's departments 2A and 2B count as 19 and 18 in the key.
    number = body[:5] + {"2A": "19", "2B": "18"}.get(body[5:7], body[5:7]) + body[7:]
    if not number.isdigit():
        return False
    month = int(number[3:5])
    if not (1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99):
        return False
    return 97 - int(number) % 97 == int(key)


def nl_bsn(text: str) -> bool:
    """Dutch burgerservicenummer: 9 digits passing the 11-proof (last weight -1)."""
    digits = digits_only(text)
    if len(digits) == 8:
        digits = "0" + digits
    if len(digits) != 9 or not is_ascii_digits(digits) or len(set(digits)) == 1:
        return False
    total = sum(int(d) * w for d, w in zip(digits, (9, 8, 7, 6, 5, 4, 3, 2, -1), strict=True))
    return total % 11 == 0 and total != 0


_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def verhoeff_ok(digits: str) -> bool:
    check = 0
    for i, ch in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[i % 8][int(ch)]]
    return check == 0


def in_aadhaar(text: str) -> bool:
    """Indian Aadhaar: 12 digits, first 2-9, Verhoeff check digit."""
    digits = digits_only(text)
    return (len(digits) == 12 and is_ascii_digits(digits) and digits[0] not in "01" and len(set(digits)) > 2
            and verhoeff_ok(digits))


def in_pan(text: str) -> bool:
    """Indian PAN: AAAAA9999A with a holder-type letter in the fourth place."""
    value = text.strip().upper()
    return (len(value) == 10 and value.isascii() and value[:5].isalpha() and value[5:9].isdigit()
            and value[9].isalpha() and value[3] in "ABCFGHJLPT")


def _mod11_digit(digits: str, weights: range | tuple[int, ...]) -> int:
    total = sum(int(d) * w for d, w in zip(digits, weights, strict=True))
    rest = total % 11
    return 0 if rest < 2 else 11 - rest


def br_cpf(text: str) -> bool:
    """Brazilian CPF: 11 digits with two mod-11 check digits, not one repeated digit."""
    digits = digits_only(text)
    if len(digits) != 11 or not is_ascii_digits(digits) or len(set(digits)) == 1:
        return False
    first = _mod11_digit(digits[:9], range(10, 1, -1))
    second = _mod11_digit(digits[:10], range(11, 1, -1))
    return digits[9:] == f"{first}{second}"


def br_cnpj(text: str) -> bool:
    """Brazilian CNPJ: 14 digits with two mod-11 check digits."""
    digits = digits_only(text)
    if len(digits) != 14 or not is_ascii_digits(digits) or len(set(digits)) == 1:
        return False
    first = _mod11_digit(digits[:12], (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2))
    second = _mod11_digit(digits[:13], (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2))
    return digits[12:] == f"{first}{second}"


def pl_pesel(text: str) -> bool:
    """Polish PESEL: 11 digits, weighted check digit, encoded birth month valid."""
    digits = digits_only(text)
    if len(digits) != 11 or not is_ascii_digits(digits) or len(set(digits)) == 1:
        return False
    month = int(digits[2:4]) % 20
    if not 1 <= month <= 12 or not 1 <= int(digits[4:6]) <= 31:
        return False
    total = sum(int(d) * w for d, w in zip(digits[:10], (1, 3, 7, 9, 1, 3, 7, 9, 1, 3), strict=True))
    return (10 - total % 10) % 10 == int(digits[10])


def cn_resident_id(text: str) -> bool:
    """Chinese resident identity card: 17 digits with a birth date and an ISO 7064 mod 11-2 check."""
    value = _clean(text)
    if len(value) != 18 or not is_ascii_digits(value[:17]) or not (value[17].isdigit() or value[17] == "X"):
        return False
    try:
        born = datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if born.year < 1900 or born > datetime.date.today():
        return False
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(value[:17], weights, strict=True))
    return "10X98765432"[total % 11] == value[17]


_NRIC_LETTERS = {"S": "JZIHGFEDCBA", "T": "JZIHGFEDCBA", "F": "XWUTRQPNMLK", "G": "XWUTRQPNMLK"}


def sg_nric(text: str) -> bool:
    """Singapore NRIC/FIN (S, T, F, G series): 7 digits and a weighted check letter."""
    value = _clean(text)
    if len(value) != 9 or not value.isascii() or value[0] not in _NRIC_LETTERS or not value[1:8].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(value[1:8], (2, 7, 6, 5, 4, 3, 2), strict=True))
    total += 4 if value[0] in "TG" else 0
    return _NRIC_LETTERS[value[0]][total % 11] == value[8]


def au_tfn(text: str) -> bool:
    """Australian Tax File Number: 9 digits, weighted sum divisible by 11."""
    digits = digits_only(text)
    if len(digits) != 9 or not is_ascii_digits(digits) or len(set(digits)) == 1:
        return False
    return sum(int(d) * w for d, w in zip(digits, (1, 4, 3, 7, 5, 8, 6, 9, 10), strict=True)) % 11 == 0


def jp_my_number(text: str) -> bool:
    """Japanese Individual Number (My Number): 12 digits, mod-11 check digit."""
    digits = digits_only(text)
    if len(digits) != 12 or not is_ascii_digits(digits) or len(set(digits)) == 1:
        return False
    body = digits[:11][::-1]
    total = sum(int(d) * (n + 1 if n <= 6 else n - 5) for n, d in enumerate(body, start=1))
    rest = total % 11
    return int(digits[11]) == (0 if rest <= 1 else 11 - rest)


def se_personnummer(text: str) -> bool:
    """Swedish personnummer (YYMMDD-NNNC or YYYYMMDD-NNNC): valid date and Luhn over ten digits."""
    digits = digits_only(text.replace("+", ""))
    if len(digits) == 12:
        digits = digits[2:]
    if len(digits) != 10 or not is_ascii_digits(digits):
        return False
    month, day = int(digits[2:4]), int(digits[4:6])
    if not 1 <= month <= 12 or not 1 <= day % 60 <= 31:
        return False
    return luhn_ok(digits)


def document_number(text: str) -> bool:
    """A passport, licence or account number next to its label: 5-20 characters, mostly digits.

    The label makes the context; this rejects the words that follow labels in
    prose ("passport number: expired") and runs of one digit.
    """
    value = _clean(text)
    if not 5 <= len(value) <= 20 or not value.isascii() or not value.isalnum():
        return False
    digits = sum(ch.isdigit() for ch in value)
    return digits >= 4 and digits * 2 >= len(value) and len(set(value)) > 2
