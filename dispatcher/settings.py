"""Settings from `DISPATCHER_*` environment variables, validated once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.errors import ConfigError
from dispatcher.sealing import valid_key

ENV_PREFIX = "DISPATCHER_"
MIN_PLATFORM_TOKEN_LENGTH = 32


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("bjet24-dispatcher"))


class Settings(BaseSettings):
    """Every knob of the service; a bad value stops start-up naming its variable."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: SecretStr | None = None
    data_dir: Path = Field(default_factory=_default_data_dir)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # /metrics, /healthz and /readyz of a worker-only process (no API port); 0 turns it off
    metrics_port: int = Field(default=8081, ge=0, le=65535)
    platform_token: SecretStr | None = None
    # secrets at rest (dispatcher/sealing.py): the key that seals, and old keys still read
    # during `dispatcher secrets rekey` (comma-separated); unset: a key kept in DATA_DIR
    encryption_key: SecretStr | None = None
    encryption_old_keys: SecretStr | None = None
    # where browsers reach this API (portal links are built on it); unset: from the request
    public_url: str | None = Field(
        default=None, pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$", max_length=2000
    )
    # CSP frame-ancestors of the tenant portal: who may embed it in an iframe
    portal_frame_ancestors: str = Field(
        default="'none'", pattern=r"^[A-Za-z0-9 :/.*'_-]+$", max_length=2000
    )

    allow_private_targets: bool = False
    require_https: bool = True

    attempt_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    retry_base_seconds: float = Field(default=30.0, gt=0)
    retry_multiplier: float = Field(default=4.0, ge=1)
    retry_max_delay_seconds: float = Field(default=36000.0, gt=0)
    retry_max_age_seconds: float = Field(default=86400.0, gt=0)
    retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    # history (events, attempts, outcomes) is kept this long, then removed by whole partitions
    retention_days: int = Field(default=30, ge=1, le=3650)

    worker_concurrency: int = Field(default=128, ge=1, le=10000)
    # the adaptive per-endpoint concurrency limit stays within [floor, ceiling]
    endpoint_concurrency: int = Field(default=32, ge=1, le=1000)
    endpoint_concurrency_floor: int = Field(default=1, ge=1, le=1000)
    claim_batch_size: int = Field(default=64, ge=1, le=1000)
    # a tenant's in-flight attempts on one worker: at most this share of its slots
    tenant_share: float = Field(default=0.5, gt=0, le=1)
    lease_seconds: float = Field(default=60.0, gt=0)
    poll_interval_seconds: float = Field(default=5.0, gt=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    settle_interval_seconds: float = Field(default=0.002, ge=0, le=1)
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_open_seconds: float = Field(default=30.0, gt=0)
    breaker_max_open_seconds: float = Field(default=1800.0, gt=0)

    # test sends (POST /v1/webhooks/{id}/test): a connection pool of their own, apart from
    # the workers', and at most this many at once per tenant in each API process (429 beyond)
    test_send_connections: int = Field(default=16, ge=1, le=1000)
    test_send_concurrency: int = Field(default=2, ge=1, le=100)

    signature_header: str = Field(default="X-Bjet24-Signature", pattern=r"^[A-Za-z0-9-]+$")
    secret_overlap_seconds: int = Field(default=86400, ge=0)

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # the API's connections: a cap, deadlines for a request head (from its first byte), for
    # a silent connection and for a body; failed authentications per client address a minute
    api_max_connections: int = Field(default=1000, ge=1, le=100_000)
    api_header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    api_idle_timeout_seconds: float = Field(default=75.0, gt=0, le=86400)
    api_body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    auth_failures_per_minute: int = Field(default=30, ge=1, le=100_000)
    db_pool_min_size: int = Field(default=2, ge=1)
    db_pool_max_size: int = Field(default=10, ge=1)
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("retention_days")
    @classmethod
    def _retention_outlives_retries(cls, days: int, info: ValidationInfo) -> int:
        """History must outlive a delivery's retry window, or a retry would lose its event."""
        max_age = info.data.get("retry_max_age_seconds")
        if max_age is not None and days * 86400 <= max_age:
            raise ValueError(
                f"must exceed the retry max age (DISPATCHER_RETRY_MAX_AGE_SECONDS={max_age:g}"
                f" s, {max_age / 86400:g} days)"
            )
        return days

    @field_validator("platform_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        """A short token can be guessed; 32 characters is what `openssl rand -hex 16` gives."""
        if token is not None and len(token.get_secret_value()) < MIN_PLATFORM_TOKEN_LENGTH:
            raise ValueError(
                f"must be at least {MIN_PLATFORM_TOKEN_LENGTH} characters "
                "(for example: openssl rand -hex 32)"
            )
        return token

    @field_validator("encryption_key", "encryption_old_keys")
    @classmethod
    def _check_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None  # set but empty: unset, as a shell or manifest often leaves it
        if value is not None:
            for part in value.get_secret_value().split(","):
                if part.strip() and not valid_key(part):
                    raise ValueError("must be 32 random bytes in base64, comma-separated")
        return value

    @field_validator("endpoint_concurrency_floor")
    @classmethod
    def _floor_below_ceiling(cls, floor: int, info: ValidationInfo) -> int:
        ceiling = info.data.get("endpoint_concurrency")
        if ceiling is not None and floor > ceiling:
            raise ValueError(f"must not exceed DISPATCHER_ENDPOINT_CONCURRENCY ({ceiling})")
        return floor


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
