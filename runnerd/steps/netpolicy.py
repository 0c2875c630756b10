"""Which addresses the provision step may connect to: the SSRF rule, a pure function of an IP.

Sits next to provision.py in the helper container (stdlib only, Python 3.9+); no packets here.
"""

from __future__ import annotations

import ipaddress

HINT = " (add it to provisionAllow to permit)"

# Ranges a job must not reach unless allow-listed, with the words used to explain a refusal.
# Checked explicitly rather than via ipaddress.is_global, whose answers differ between Python versions.
_BLOCKED = [(ipaddress.ip_network(net), why) for net, why in [
    ("0.0.0.0/8", "unspecified"), ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"), ("10.0.0.0/8", "private"), ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"), ("100.64.0.0/10", "CGNAT (shared)"), ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"), ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"), ("fc00::/7", "private (unique local)"), ("ff00::/8", "multicast"),
    ("64:ff9b:1::/48", "local-use NAT64"), ("100::/64", "discard-only"),
]]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4COMPAT = ipaddress.ip_network("::/96")


def _embedded_v4(addr):
    """IPv4 addresses hidden inside an IPv6 one (mapped, NAT64, compat, 6to4, Teredo)."""
    if addr.version != 6:
        return []
    found = [addr.ipv4_mapped, addr.sixtofour]
    if addr in _NAT64 or (addr in _V4COMPAT and int(addr) > 1):
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    if addr.teredo:
        found.extend(addr.teredo)
    return [a for a in found if a is not None]


def _classify(addr) -> str | None:
    for net, why in _BLOCKED:
        if addr.version == net.version and addr in net:
            return why
    for inner in _embedded_v4(addr):
        inner_why = _classify(inner)
        if inner_why:
            return "IPv6 form of %s, %s %s" % (inner, _article(inner_why), inner_why)
    if addr.version == 4 and not addr.is_global:  # documentation, benchmarking, IETF protocol ranges
        return "special-purpose (non-public)"
    return None


def _article(word: str) -> str:
    return "an" if word[0] in "aeiouAEIOU" else "a"


def check_address(host: str, ip: str, allow: list) -> str | None:
    """Why fetching from `ip` (resolved from `host`) is refused, or None when it is permitted."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone such as %eth0
    except ValueError:
        return "%s is not an IP address" % ip
    candidates = [addr] + _embedded_v4(addr)
    wanted = host.lower().rstrip(".")
    for entry in allow or ():
        entry = str(entry).strip()
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if entry.lower().rstrip(".") == wanted:  # an allow-listed host name covers all its IPs
                return None
            continue
        if any(c.version == net.version and c in net for c in candidates):
            return None
    why = _classify(addr)
    if why is None:
        return None
    return "%s is %s %s address%s" % (ip, _article(why), why, HINT)
