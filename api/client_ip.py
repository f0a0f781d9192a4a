"""Which address is the client: the socket peer, or what trusted proxies say in X-Forwarded-For."""

from __future__ import annotations

from starlette.requests import Request

from domain.access.checks import Address, Network, address_in, parse_address


def _hop_address(hop: str) -> Address | None:
    """An X-Forwarded-For entry: a bare address, ``1.2.3.4:5678`` or ``[2001:db8::1]:5678``."""
    text = hop.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return parse_address(text)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str | None:
    """Walk X-Forwarded-For from the right while hops are trusted proxies; the first untrusted hop is
    the client. An untrusted peer's header is ignored entirely (anyone can write it)."""
    peer_address = parse_address(peer)
    if peer_address is None or not trusted or not address_in(peer_address, trusted) or not forwarded_for:
        return str(peer_address) if peer_address is not None else peer
    client = peer_address
    for hop in reversed(forwarded_for.split(",")):
        address = _hop_address(hop)
        if address is None:
            break  # garbage in the chain: trust nothing left of it
        client = address
        if not address_in(address, trusted):
            break
    return str(client)


def request_client_ip(request: Request) -> str | None:
    """The client of this request, by the app's trusted proxies. Several X-Forwarded-For lines are one list
    (RFC 9110 §5.3): a proxy that appends its own line after the client's must not leave only the first read."""
    peer = request.client.host if request.client else None
    forwarded_for = ",".join(request.headers.getlist("x-forwarded-for")) or None
    return client_ip(peer, forwarded_for, request.app.state.trusted_proxies)
