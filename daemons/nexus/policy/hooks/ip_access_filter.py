"""``ip-access-filter``: allow and block lists of addresses and CIDR ranges.  Pure.

Options: ``allow`` and ``block``, lists of addresses or networks (IPv4 or
IPv6; ``10.0.0.0/8``, ``2001:db8::/32``, ``192.0.2.7``).  A source in ``block``
is rejected; with a non-empty ``allow``, a source outside it is rejected too.
An unknown or unparsable source is rejected when ``allow`` is set (the list
cannot vouch for it) and abstains otherwise.  IPv4-mapped IPv6 sources
(``::ffff:192.0.2.7``) count as their IPv4 address.

Lists are merged into sorted integer ranges at build time, so a lookup is one
parse and a binary search whatever their length.
"""

from __future__ import annotations

import bisect
import ipaddress

import attrs

from nexus.policy.config import HookConfig, PolicyConfigError, structure_options
from nexus.policy.hooks.base import BuildEnv, HookContext, PureHook
from nexus.policy.verdict import ABSTAIN, Decision, Verdict, block

_OK = Verdict(Decision.APPROVE)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@attrs.frozen(kw_only=True)
class AccessOptions:
    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()


class Ranges:
    """Disjoint, sorted ``[first, last]`` integer ranges per IP version."""

    __slots__ = ("_firsts", "_lasts")

    def __init__(self, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self._firsts: dict[int, list[int]] = {4: [], 6: []}
        self._lasts: dict[int, list[int]] = {4: [], 6: []}
        for version in (4, 6):
            spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in networks if n.version == version)
            firsts, lasts = self._firsts[version], self._lasts[version]
            for first, last in spans:
                if lasts and first <= lasts[-1] + 1:
                    lasts[-1] = max(lasts[-1], last)
                else:
                    firsts.append(first)
                    lasts.append(last)

    def __bool__(self) -> bool:
        return bool(self._firsts[4] or self._firsts[6])

    def __contains__(self, address: Address) -> bool:
        value = int(address)
        firsts = self._firsts[address.version]
        i = bisect.bisect_right(firsts, value) - 1
        return i >= 0 and value <= self._lasts[address.version][i]


def parse_address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _networks(config: HookConfig, key: str, items: tuple[str, ...]) -> Ranges:
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise PolicyConfigError(f"{config.label}: {key}: {item!r} is not an address or network") from None
    return Ranges(nets)


class IpAccessFilter(PureHook):
    __slots__ = ("allow", "deny")

    def __init__(self, config: HookConfig, allow: Ranges, deny: Ranges) -> None:
        super().__init__(config)
        self.allow = allow
        self.deny = deny

    def evaluate(self, ctx: HookContext) -> Verdict:
        address = parse_address(ctx.exchange.source_ip)
        if address is None:
            if self.allow:
                return block(("source address unknown",), reason_code="IP_NOT_ALLOWED", status=403)
            return ABSTAIN
        if address in self.deny:
            return block((f"source {address} is blocked",), reason_code="IP_BLOCKED", status=403)
        if self.allow and address not in self.allow:
            return block((f"source {address} is not allowed",), reason_code="IP_NOT_ALLOWED", status=403)
        return _OK


def build(config: HookConfig, env: BuildEnv) -> IpAccessFilter:
    options = structure_options(AccessOptions, config)
    if not options.allow and not options.block:
        raise PolicyConfigError(f"{config.label}: needs an allow or a block list")
    return IpAccessFilter(config, _networks(config, "allow", options.allow), _networks(config, "block", options.block))
