"""Portal links: signed, expiring, naming one endpoint (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from domain.console import portal, sessions
from domain.webhooks.endpoints import EndpointError

MASTER = b"m" * 32
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_a_link_names_its_endpoint_until_it_expires() -> None:
    link = portal.sign_link(MASTER, 42, 3600, T0)
    assert link.path == "/console/portal/" + link.token
    assert portal.open_link(MASTER, link.token, T0 + dt.timedelta(seconds=3599)) == 42
    with pytest.raises(portal.PortalLinkInvalid, match="expired"):
        portal.open_link(MASTER, link.token, T0 + dt.timedelta(seconds=3600))


def test_a_link_under_another_master_key_or_a_session_token_does_not_open() -> None:
    with pytest.raises(portal.PortalLinkInvalid):
        portal.open_link(MASTER, portal.sign_link(b"x" * 32, 42, 3600, T0).token, T0)
    session_token = sessions.encode(sessions.session_key(MASTER), sessions.start(42, T0))
    with pytest.raises(portal.PortalLinkInvalid):
        portal.open_link(MASTER, session_token, T0)


@pytest.mark.parametrize("ttl", [0, -1, portal.MAX_TTL_SECONDS + 1])
def test_a_lifetime_outside_the_limits_is_refused(ttl: float) -> None:
    with pytest.raises(EndpointError):
        portal.sign_link(MASTER, 42, ttl, T0)
