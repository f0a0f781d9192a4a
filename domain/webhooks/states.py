"""Delivery statuses and attempt outcomes, stored as these string values (pure, no I/O)."""

from __future__ import annotations

from enum import StrEnum


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due at next_attempt_at
    IN_PROGRESS = "in_progress"  # claimed, leased until locked_until
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retries exhausted, or the endpoint was disabled by the policy
    CANCELLED = "cancelled"  # the endpoint was disabled or deleted before the attempt


# Queued or being attempted: what the sweeper and the backlog metrics look at.
OPEN_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.IN_PROGRESS)
# Nothing more will happen unless an operator replays it.
FINISHED_STATUSES = (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED)
GIVEN_UP_STATUSES = (DeliveryStatus.FAILED, DeliveryStatus.CANCELLED)


class AttemptOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    LOST = "lost"  # the worker's lease ran out during the attempt: what the endpoint saw is unknown
