"""Which address is the client: the socket peer, or what trusted proxies say in X-Forwarded-For."""

from __future__ import annotations

from domain.access import Network, address_in, parse_address


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str | None:
    """Walk X-Forwarded-For from the right while hops are trusted proxies; the first untrusted hop is
    the client. An untrusted peer's header is ignored entirely (anyone can write it)."""
    peer_address = parse_address(peer)
    if peer_address is None or not trusted or not address_in(peer_address, trusted) or not forwarded_for:
        return str(peer_address) if peer_address is not None else peer
    client = peer_address
    for hop in reversed(forwarded_for.split(",")):
        address = parse_address(hop)
        if address is None:
            break  # garbage in the chain: trust nothing left of it
        client = address
        if not address_in(address, trusted):
            break
    return str(client)
