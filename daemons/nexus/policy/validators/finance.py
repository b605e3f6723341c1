"""Banking identifiers: ABA routing numbers, SWIFT/BIC codes, magnetic-stripe track data."""

from __future__ import annotations

from nexus.policy.validators._common import digits_only, is_ascii_digits
from nexus.policy.validators.luhn import card

# ISO 3166-1 alpha-2, plus XK (Kosovo), used in BICs.
COUNTRIES = frozenset({
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB", "BD",
    "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA",
    "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE",
    "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA",
    "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK",
    "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT",
    "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS",
    "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS",
    "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST",
    "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW",
    "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA",
    "ZM", "ZW", "XK",
})


def aba_routing(text: str) -> bool:
    """US ABA routing transit number: valid Federal Reserve prefix and 3-7-1 weighted checksum."""
    digits = digits_only(text)
    if len(digits) != 9 or not is_ascii_digits(digits) or len(set(digits)) == 1:
        return False
    prefix = int(digits[:2])
    if not (prefix <= 12 or 21 <= prefix <= 32 or 61 <= prefix <= 72 or prefix == 80):
        return False
    d = [int(c) for c in digits]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + d[2] + d[5] + d[8]) % 10 == 0


def swift_bic(text: str) -> bool:
    """SWIFT/BIC: 4-letter institution, ISO country, 2-character location, optional 3-character branch."""
    value = text.strip().upper()
    if len(value) not in (8, 11) or not value.isascii() or not value.isalnum():
        return False
    return value[:4].isalpha() and value[4:6] in COUNTRIES and value[6] not in "01"


def track_data(text: str) -> bool:
    """Track 1 (``%B<PAN>^NAME^YYMM…``) or track 2 (``;<PAN>=YYMM…``) with a valid card number."""
    value = text.strip()
    if value.startswith("%B"):
        pan = value[2:].split("^", 1)[0]
    elif value.startswith(";"):
        pan = value[1:].split("=", 1)[0]
    else:
        return False
    return card(pan)
