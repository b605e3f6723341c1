"""Network identifiers: IPv4 and IPv6 addresses, MAC addresses."""

from __future__ import annotations

import ipaddress


def ipv4(text: str) -> bool:
    """Four dotted octets 0-255 without leading zeros, not 0.0.0.0 nor a broadcast."""
    parts = text.strip().split(".")
    if len(parts) != 4:
        return False
    for part in parts:
        if not part.isascii() or not part.isdigit() or len(part) > 3 or (len(part) > 1 and part[0] == "0"):
            return False
        if int(part) > 255:
            return False
    return text.strip() not in ("0.0.0.0", "255.255.255.255")  # noqa: S104 - compared, never bound


def public_ipv4(text: str) -> bool:
    """A valid IPv4 address that can name a host or subscriber on the internet.

    Private, loopback, link-local, shared, multicast and reserved ranges are
    infrastructure, not personal data.  The documentation ranges (192.0.2/24,
    198.51.100/24, 203.0.113/24) count as public: they stand in for real
    addresses in pasted logs.
    """
    if not ipv4(text):
        return False
    address = ipaddress.IPv4Address(text.strip())
    if any(address in net for net in _DOCS4):
        return True
    return address.is_global and not address.is_multicast


def public_ipv6(text: str) -> bool:
    """A global-scope IPv6 address (or 2001:db8::/32, as for IPv4) written with at least three colons."""
    value = text.strip().strip("[]")
    if value.count(":") < 3:
        return False
    try:
        address = ipaddress.IPv6Address(value)
    except ValueError:
        return False
    if address.ipv4_mapped is not None:
        return public_ipv4(str(address.ipv4_mapped))
    return address in _DOCS6 or (address.is_global and not address.is_multicast)


_DOCS4 = tuple(ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
_DOCS6 = ipaddress.IPv6Network("2001:db8::/32")


def mac(text: str) -> bool:
    """EUI-48 with one consistent separator; not all zeros, broadcast, multicast or digits only.

    All-digit groups (``12:30:45:10:20:00``) are far likelier to be times or
    version triples than one of the few MACs without a hex letter.
    """
    value = text.strip().lower()
    if value.replace(":", "").replace("-", "").isdigit():
        return False
    sep = value[2:3]
    if sep not in (":", "-") or len(value) != 17:
        return False
    octets = value.split(sep)
    if len(octets) != 6 or any(len(o) != 2 for o in octets):
        return False
    try:
        raw = bytes(int(o, 16) for o in octets)
    except ValueError:
        return False
    return len(set(raw)) > 1 and raw not in (b"\x00" * 6, b"\xff" * 6) and raw[:3] != b"\x01\x00\x5e"
