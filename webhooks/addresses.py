"""Which addresses a webhook may be sent to.

An endpoint URL is an instruction to make this server send requests; left unchecked it
would let an API key holder reach what only the server can reach (a database, a cloud
metadata service at 169.254.169.254, an admin port on localhost). So only globally
routable addresses are allowed unless the operator says otherwise
(`CREDITD_WEBHOOKS_ALLOW_PRIVATE=true`).

The check runs twice: when an endpoint is created or changed (a clear 400), and on every
connection, against the addresses the host resolves to at that moment, which are the
ones connected to. The second check is what stops DNS rebinding: a name that resolved to a
public address when the endpoint was created and to 127.0.0.1 later.
"""

from __future__ import annotations

import ipaddress
import socket

import anyio

__all__ = ["AddressRefused", "refusal", "resolve"]

RESOLVE_TIMEOUT_S = 5.0


class AddressRefused(Exception):
    """The host resolves to an address webhooks may not be sent to."""


def refusal(address: str) -> str | None:
    """Why `address` (an IP literal) is refused, or None when it is globally routable."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast:
        return f"{ip} is not a public address"
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_private:
        return f"{ip} is a private address"
    if ip.is_reserved or not ip.is_global:
        return f"{ip} is not a public address"
    return None


async def resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses of `host`, all of them allowed; AddressRefused if any one is not
    (a name that resolves to both a public and a private address is refused), or if the
    name does not resolve."""
    try:
        with anyio.fail_after(RESOLVE_TIMEOUT_S):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise AddressRefused(f"{host} does not resolve: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise AddressRefused(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason is not None:
                raise AddressRefused(f"{host} resolves to {reason}")
    return addresses
