"""Delivery statuses and attempt outcomes are enum members in Python and their plain string values in the rows."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Text, cast, literal, select, text, type_coerce
from sqlalchemy.exc import StatementError

from domain.platform.database import unit_of_work
from domain.webhooks.models import WebhookAttempt, WebhookDelivery
from domain.webhooks.states import AttemptOutcome, DeliveryStatus


def test_the_migrated_schema_allows_exactly_the_delivery_statuses(settings) -> None:
    with unit_of_work() as session:
        definition = session.scalar(text(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'ck_webhook_deliveries_status'"))
    assert set(re.findall(r"'([a-z_]+)'", definition or "")) == {status.value for status in DeliveryStatus}


@pytest.mark.parametrize(("column", "stored", "member"), [
    (WebhookDelivery.status, "in_progress", DeliveryStatus.IN_PROGRESS),
    (WebhookAttempt.outcome, "lost", AttemptOutcome.LOST),
])
def test_a_stored_value_loads_as_its_member(settings, column, stored, member) -> None:
    with unit_of_work() as session:
        loaded = session.scalar(select(type_coerce(literal(stored), column.type)))
        stored_back = session.scalar(select(cast(type_coerce(member, column.type), Text)))
    assert loaded is member
    assert type(stored_back) is str and stored_back == stored


def test_a_value_outside_the_enum_is_refused_before_it_reaches_the_database(settings) -> None:
    with unit_of_work() as session, pytest.raises(StatementError, match="not a valid DeliveryStatus"):
        session.execute(select(WebhookDelivery.id).where(WebhookDelivery.status == "in-progress"))
