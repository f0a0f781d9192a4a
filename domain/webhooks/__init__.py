"""Webhook fan-out and delivery (Standard Webhooks): endpoints, delivery rows, attempts, SSRF guard.

Small single-purpose modules: ``models`` (rows), ``endpoints`` (registration, secrets), ``fan_out``
(one delivery row per event × subscribed endpoint), ``delivery`` (claim → send → record), ``policy``
(what an attempt's outcome means), ``ssrf`` (which addresses may be reached), ``transport`` (the pinned
HTTP client), ``signatures`` (v1 secrets, v1a key pairs and ``webhook-signature``), ``jobs`` (the transaction
owner used by tasks and tests), ``replay`` (re-queueing and the delivery log), ``audit_events`` (administration
and policy decisions as outbox events).
"""
