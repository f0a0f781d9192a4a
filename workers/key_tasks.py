"""keys.advance (beat): one idempotent step of the signing-key rotation state machine."""

from __future__ import annotations

from domain.platform.database import unit_of_work
from domain.platform.logs import get_logger
from domain.platform.models import utcnow
from domain.platform.settings import get_settings
from domain.platform.task_names import AUDIT_RECORD, KEYS_ADVANCE, WEBHOOKS_FAN_OUT
from domain.signing import rotation
from domain.signing.keys import SigningKeyError
from domain.signing.master_key import MasterKeyError
from workers.app import celery_app, doorbell

log = get_logger("keymeta.workers.keys")


@celery_app.task(name=KEYS_ADVANCE)
def advance() -> None:
    try:
        with unit_of_work() as session:
            outcome = rotation.advance(session, get_settings(), utcnow())
    except (MasterKeyError, SigningKeyError) as exc:
        # Nothing changed (the transaction rolled back). Loud on every beat until an operator fixes it.
        log.error("keys.advance_failed", error=str(exc),
                  hint="check KEYMETA_MASTER_KEY: it must be the key the signing keys were sealed with")
        raise
    for t in outcome.transitions:
        log.info(t.event_type, kid=t.kid, scope=t.scope, from_state=t.from_state, to_state=t.to_state)
    if outcome.event_ids:  # after commit; the sweeper re-rings anything this misses
        doorbell().ring(AUDIT_RECORD, outcome.event_ids)
        doorbell().ring(WEBHOOKS_FAN_OUT, outcome.event_ids)
