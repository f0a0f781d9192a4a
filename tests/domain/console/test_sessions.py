"""Operator sessions and their CSRF tokens (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from domain.console import sessions
from domain.console.tokens import BadToken

KEY = sessions.session_key(b"k" * 32)
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_a_session_round_trips_until_it_is_idle_too_long() -> None:
    token = sessions.encode(KEY, sessions.start(7, T0))
    assert sessions.decode(KEY, token, T0 + dt.timedelta(seconds=600), idle_seconds=600).api_key_id == 7
    with pytest.raises(sessions.SessionExpired):
        sessions.decode(KEY, token, T0 + dt.timedelta(seconds=601), idle_seconds=600)


def test_touching_a_session_restarts_only_its_idle_clock() -> None:
    session = sessions.start(7, T0)
    later = T0 + dt.timedelta(seconds=500)
    token = sessions.encode(KEY, sessions.touch(session, later))
    assert sessions.decode(KEY, token, later + dt.timedelta(seconds=500), idle_seconds=600).started_at == \
        session.started_at
    with pytest.raises(sessions.SessionExpired):
        sessions.decode(KEY, token, later + dt.timedelta(seconds=500), idle_seconds=600, max_age_seconds=900)


def test_a_session_signed_under_another_key_or_edited_is_refused() -> None:
    token = sessions.encode(KEY, sessions.start(7, T0))
    other = sessions.encode(sessions.session_key(b"o" * 32), sessions.start(7, T0))
    edited = sessions.encode(KEY, sessions.start(8, T0)).split(".")[0] + "." + token.split(".")[1]
    for forged in (other, edited, "", "no-dot", token + ".x"):
        with pytest.raises(BadToken):
            sessions.decode(KEY, forged, T0)


def test_csrf_token_is_bound_to_one_sign_in() -> None:
    first, second = sessions.start(7, T0), sessions.start(7, T0)
    assert sessions.csrf_valid(KEY, first, sessions.csrf_token(KEY, first))
    assert not sessions.csrf_valid(KEY, second, sessions.csrf_token(KEY, first))
    assert not sessions.csrf_valid(KEY, first, None)
