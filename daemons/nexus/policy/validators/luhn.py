"""Luhn (mod 10) family: payment cards with IIN ranges, IMEI, Canadian SIN."""

from __future__ import annotations

from nexus.policy.validators._common import digits_only, has_run, is_ascii_digits

# Published test PANs (card-network and PSP documentation): not cardholder data.
TEST_PANS = frozenset({
    "4111111111111111", "4242424242424242", "4012888888881881", "4000056655665556", "4222222222222",
    "5555555555554444", "5105105105105100", "5200828282828210", "2223003122003222",
    "378282246310005", "371449635398431", "378734493671000",
    "6011111111111117", "6011000990139424", "6011000400000000",
    "3530111333300000", "3566002020360505", "30569309025904", "38520000023237", "36227206271667",
    "6200000000000005", "4000000000000002", "4000000000009995",
})


def luhn_ok(digits: str) -> bool:
    if not is_ascii_digits(digits):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _network_lengths(pan: str) -> tuple[int, ...]:
    """Lengths the issuing network of ``pan``'s IIN uses; empty when no network owns the prefix."""
    p2, p3, p4, p6 = int(pan[:2]), int(pan[:3]), int(pan[:4]), int(pan[:6])
    if pan[0] == "4":
        return (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return (16,)
    if p2 in (34, 37):
        return (15,)
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:
        return (16, 17, 18, 19)
    if 3528 <= p4 <= 3589:
        return (16, 17, 18, 19)
    if 300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095:
        return (14, 15, 16, 17, 18, 19)
    if p2 == 62 or p2 == 81:
        return (16, 17, 18, 19)
    if 2200 <= p4 <= 2204:
        return (16, 17, 18, 19)
    if p2 == 50 or 56 <= p2 <= 69:
        return (12, 13, 14, 15, 16, 17, 18, 19)
    return ()


def card(text: str) -> bool:
    """A payment card number: known IIN range and length, Luhn-valid, not a published test number."""
    pan = digits_only(text)
    if not is_ascii_digits(pan) or not 12 <= len(pan) <= 19:
        return False
    if len(pan) not in _network_lengths(pan) or not luhn_ok(pan):
        return False
    return pan not in TEST_PANS and not has_run(pan[6:], 8)


def imei(text: str) -> bool:
    """15-digit IMEI with its Luhn check digit (not a run of one digit)."""
    digits = digits_only(text)
    return len(digits) == 15 and luhn_ok(digits) and not has_run(digits, 8)


def ca_sin(text: str) -> bool:
    """Canadian Social Insurance Number: 9 digits, Luhn, first digit not 0 or 8."""
    digits = digits_only(text)
    return len(digits) == 9 and digits[0] not in "08" and luhn_ok(digits) and not has_run(digits, 6)
