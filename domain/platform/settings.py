"""Configuration from ``KEYMETA_*`` environment variables (and an optional ``.env``)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CidrList = Annotated[list[str], NoDecode]
POSTGRES_SCHEMES = ("postgresql", "postgres")
RATE_LIMIT_OFF = ("", "off", "none")  # a limit string that turns its limit off


def is_postgres_url(url: str) -> bool:
    """``postgresql://`` or ``postgres://``, with or without a ``+driver``."""
    scheme, separator, _ = url.partition("://")
    return bool(separator) and scheme.split("+", 1)[0].lower() in POSTGRES_SCHEMES


def _split_cidrs(value: object) -> list[str]:
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    cidrs = []
    for item in items:
        text = str(item).strip()
        if text:
            cidrs.append(str(ipaddress.ip_network(text, strict=False)))
    return cidrs


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYMETA_", env_file=".env", extra="ignore")

    var_dir: Path = Path("var")
    # PostgreSQL only; empty: the embedded server under var_dir (domain/platform/embedded_postgres.py).
    database_url: str = ""
    # PostgreSQL connections per API process. Each statement is short; more connections than the database has
    # cores to run them only add server CPU (docs/benchmarks.md).
    api_db_pool_size: int = Field(default=8, ge=2, le=200)
    # How long the API waits for a new database connection (TCP, TLS, authentication) before answering 503: a
    # server that does not answer must not hold a request longer than a refused connection does.
    database_connect_timeout_seconds: float = Field(default=0.5, gt=0, le=60)
    # How long one of the API's statements may run (the server cancels it), and how long a request waits for a
    # pooled connection, before answering 503: neither a stuck statement nor a silent server may hold requests.
    database_statement_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    broker_url: str = ""
    master_key: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    trusted_proxies: CidrList = Field(default_factory=list)
    webhook_allowed_cidrs: CidrList = Field(default_factory=list)
    # Webhook delivery (domain/webhooks). Retry delays after each failed attempt, in seconds (±20 % jitter).
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0])
    webhook_retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    webhook_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_read_timeout_seconds: float = Field(default=15.0, gt=0)
    webhook_total_timeout_seconds: float = Field(default=30.0, gt=0)  # whole attempt, slow-loris cap
    webhook_response_excerpt_bytes: int = Field(default=2048, ge=0, le=65536)
    webhook_retry_after_max_seconds: float = Field(default=86400.0, ge=0)
    webhook_disable_after_seconds: float = Field(default=5 * 86400.0, gt=0)  # failing continuously
    webhook_secret_overlap_seconds: float = Field(default=86400.0, ge=0)  # old secret still signs
    webhook_lease_seconds: float = Field(default=10.0, ge=1)  # a claim its worker stops renewing expires after this
    webhook_rering_seconds: float = Field(default=10.0, gt=0)  # the sweeper re-rings a due delivery not taken
    webhook_sweep_interval_seconds: float = Field(default=2.0, gt=0)
    webhook_sweep_batch: int = Field(default=1000, ge=1)
    # Deliveries a fan-out task creates claimed and sends itself; the rest go to webhooks.deliver tasks.
    webhook_inline_deliveries: int = Field(default=16, ge=0, le=1000)
    key_rotation_days: int = Field(default=90, ge=1)
    key_overlap_seconds: int = Field(default=172800, ge=0)
    key_size: int = 2048
    # How often beat runs keys.advance (the rotation state machine); each run is cheap when nothing is due.
    key_check_interval_seconds: float = Field(default=60.0, gt=0)
    # In-process caches of API keys, the block list and signing keys: how stale they may be.
    cache_ttl_seconds: float = Field(default=5.0, ge=0)
    # The doorbell must never hold up a response: bounded publish time.
    doorbell_timeout_seconds: float = Field(default=1.0, gt=0)
    # How long a doorbell gathers ids before it sends: one message (one task, one transaction) per task name
    # for everything rung meanwhile. Longer batches cost less per event; the wait adds to every event's latency.
    doorbell_linger_seconds: float = Field(default=0.05, ge=0, le=1)
    # Prefix of every queue name: lets several deployments (or parallel test runs) share a broker.
    queue_prefix: str = ""
    # The sweeper re-rings outbox events not consumed after this many seconds.
    sweep_grace_seconds: float = Field(default=5.0, ge=0)
    sweep_interval_seconds: float = Field(default=2.0, gt=0)
    # How long an Idempotency-Key's decided answer is kept for replay (docs/api.md, "Idempotency keys").
    idempotency_ttl_seconds: int = Field(default=86400, ge=1)
    # The console's sign-in (docs/console.md): ended after this long without a request, and after this long at all.
    console_session_idle_seconds: int = Field(default=1800, ge=60)
    console_session_max_age_seconds: int = Field(default=43200, ge=60)
    # Where clients reach this service (https://keymeta.example.com): the start of printed portal links. Empty:
    # the request's own address, and the CLI prints the path only.
    public_url: str = ""
    # Meta keys one license key may hold; a create beyond them is refused (901).
    meta_max_keys_per_license: int = Field(default=100, ge=1)
    log_format: str = "auto"  # auto | json | console
    log_level: str = "INFO"
    # Rate limits of the signed endpoint (api/rate_limit.py; docs/api.md "Rate limits"), on by default: the values
    # leave a legitimate client room and stop a brute force of API keys from one address. Limit strings use the
    # `limits` notation ("100/second;6000/minute"); an empty string or "off" turns that one limit off, and
    # KEYMETA_RATE_LIMIT_ENABLED=false all of them (a benchmark from one address says so explicitly).
    rate_limit_enabled: bool = True
    rate_limit_per_api_key: str = "100/second;6000/minute"
    rate_limit_per_ip: str = "50/second;3000/minute"
    # Requests answered 100/101 (unknown or inactive key) from one IP: brute force is limited much tighter.
    rate_limit_failed_auth_per_ip: str = "10/minute;100/hour"
    # memory:// (per process) or redis://host:6379/0 (shared by every API replica).
    rate_limit_storage_url: str = "memory://"
    rate_limit_strategy: str = "sliding-window-counter"  # | fixed-window | moving-window
    rate_limit_key_prefix: str = "keymeta"  # namespace in a shared store (deployments, parallel tests)

    @field_validator("trusted_proxies", "webhook_allowed_cidrs", mode="before")
    @classmethod
    def _parse_cidrs(cls, value: object) -> list[str]:
        return _split_cidrs(value)

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> list[float]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        delays = [float(str(item).strip()) for item in items if str(item).strip()]
        if not delays or any(delay < 0 for delay in delays):
            raise ValueError("KEYMETA_WEBHOOK_RETRY_SCHEDULE must be comma-separated non-negative seconds")
        return delays

    @field_validator("rate_limit_per_api_key", "rate_limit_per_ip", "rate_limit_failed_auth_per_ip")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        if value.strip().lower() in RATE_LIMIT_OFF:
            return ""
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"malformed rate limit {value!r} (e.g. '100/second;6000/minute' or 'off')") from exc
        return value.strip()

    @field_validator("rate_limit_strategy")
    @classmethod
    def _check_rate_limit_strategy(cls, value: str) -> str:
        if value not in ("sliding-window-counter", "fixed-window", "moving-window"):
            raise ValueError(
                "KEYMETA_RATE_LIMIT_STRATEGY must be sliding-window-counter, fixed-window or moving-window")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        value = value.strip()
        if value and not is_postgres_url(value):
            scheme = value.split("://", 1)[0] if "://" in value else value[:20]
            raise ValueError(f"KEYMETA_DATABASE_URL must be a PostgreSQL URL (postgresql://user@host:5432/db), "
                             f"not {scheme!r}; unset it to use the embedded PostgreSQL server")
        return value

    @field_validator("key_size")
    @classmethod
    def _check_key_size(cls, value: int) -> int:
        if value not in (2048, 3072, 4096):
            raise ValueError("KEYMETA_KEY_SIZE must be 2048, 3072 or 4096")
        return value

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return (self.var_dir / "broker").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
