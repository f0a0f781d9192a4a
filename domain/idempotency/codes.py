"""The audit event types the idempotency layer records by itself (its codes are ``ExtensionCode`` members)."""

from __future__ import annotations

# Audit-only outbox events (never fanned out to webhooks). A replay's outcome code is the replayed one.
IDEMPOTENT_REPLAY = "license_key_meta.idempotent_replay"
# A malformed key (901), a reuse with other parameters (4220), a repeat while the first runs (4090).
IDEMPOTENCY_REFUSED = "license_key_meta.idempotency_refused"
