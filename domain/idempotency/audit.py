"""The audit record of an answer the idempotency layer gives by itself (a replay or a refusal): one outbox event.

Every request to a metadata endpoint leaves exactly one audit record; a request that reaches the endpoint's
own handler is audited there, so only these answers are audited here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from domain.events.outbox import add_event_async


async def audit_answer(conn: AsyncConnection, event_type: str, api_key_id: int | None, context: dict[str, Any], *,
                       outcome_code: int, request_id: str | None, now: dt.datetime) -> int:
    """Add the event; the actor is the presented API key's row id when the key is known."""
    payload = {**context, "api_key_id": api_key_id}
    return await add_event_async(conn, event_type, payload, request_id=request_id, outcome_code=outcome_code,
                                 now=now)
