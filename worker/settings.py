"""Settings read from the environment (and a `.env` file), as the README's Configuration
lists them."""

from __future__ import annotations

import json
import logging
import os
import threading
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.redis_url import is_sentinel, parse

log = logging.getLogger(__name__)


class Settings(BaseSettings):
    """Every knob of spdist; built once by `get_settings()`, or directly by tests."""

    model_config = SettingsConfigDict(env_prefix="SPDIST_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./spdist.db"
    redis_url: str = "redis://localhost:6379/0"
    # With a Sentinel URL in redis_url: the monitored master's name (worker/redis_url.py).
    redis_master_name: str | None = Field(None, validate_default=True)
    streampixel_url: str = "https://api.streampixel.io/pixelStripeApi"
    # NoDecode: our validator parses the JSON, so an empty value means "none".
    api_keys: Annotated[dict[str, SecretStr], NoDecode] = Field(default_factory=dict)
    api_keys_file: Path | None = None
    min_interval_s: float = Field(120.0, gt=0)
    api_tokens: SecretStr | None = None
    webhook_token: SecretStr | None = None
    max_attempts: int = Field(8, ge=1)
    http_timeout_s: float = Field(30.0, gt=0)
    http_connect_timeout_s: float = Field(5.0, gt=0)
    auto_distribute: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    flower_basic_auth: SecretStr | None = None
    api_threads: int = Field(8, ge=1)
    operators: str = ""
    max_waiting_per_user: int = Field(1000, ge=1)
    # History (README, Retention): unset keeps every record; /metrics open unless a token.
    retention_days: float | None = Field(None, gt=0)
    metrics_token: SecretStr | None = None
    hold_projects: str = ""
    # Callbacks (README, Callbacks): where they may go, and the key that signs them.
    callback_hosts: str = ""
    callback_secret: SecretStr | None = None
    # The callbackUrl of requests auto-distribution makes (they have no caller to give one).
    auto_callback_url: str | None = None

    # Pacer tuning (not part of the shared interface; the README documents it).
    # The lead covers the claim's SQL and opening the connection (DNS, TCP, TLS).
    pacer_lead_s: float = Field(0.3, ge=0)
    # How long after its fire a call may still leave; past it, no byte is sent.
    pacer_send_window_s: float = Field(0.5, gt=0)
    pacer_guard_s: float | None = Field(None, ge=0)
    pacer_max_late_s: float = Field(1.0, gt=0)
    max_countdown_s: float = Field(300.0, gt=0)
    reconcile_every_s: float = Field(1.0, gt=0)
    backoff_base_s: float = Field(30.0, gt=0)
    backoff_cap_s: float = Field(600.0, gt=0)
    processing_window_s: float = Field(7200.0, gt=0)
    transient_backoff_base_s: float = Field(5.0, gt=0)
    transient_backoff_cap_s: float = Field(600.0, gt=0)
    callback_timeout_s: float = Field(10.0, gt=0)
    callback_backoff_base_s: float = Field(5.0, gt=0)
    callback_backoff_cap_s: float = Field(3600.0, gt=0)
    callback_expire_s: float = Field(86400.0, gt=0)  # give up this long after the first try
    callback_lease_s: float = Field(60.0, gt=0)  # a claimed try is another's again after it
    callback_threads: int = Field(4, ge=1)

    @field_validator("api_keys", "auto_distribute", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if is_sentinel(value):
            parse(value)  # its ValueError names the fault, never the URL
        return value

    @field_validator("redis_master_name")
    @classmethod
    def _need_master_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value and is_sentinel(info.data.get("redis_url", "")):
            raise ValueError(
                "SPDIST_REDIS_URL is a Sentinel URL: set SPDIST_REDIS_MASTER_NAME "
                "to the name of the master its Sentinels monitor"
            )
        return value or None

    @field_validator("streampixel_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @property
    def guard_s(self) -> float:
        """Margin added to every gap: covers network jitter between our send and the arrival."""
        if self.pacer_guard_s is not None:
            return self.pacer_guard_s
        return min(0.5, max(0.01, self.min_interval_s * 0.004))

    @property
    def lease_s(self) -> float:
        """How long a claim lives: long enough for the wait, the call and its recording."""
        return (
            self.pacer_lead_s
            + self.pacer_max_late_s
            + self.pacer_send_window_s
            + self.http_connect_timeout_s * 2
            + (self.http_timeout_s * 2)
            + 30.0
        )

    def token_list(self) -> list[str]:
        """The bearer tokens the HTTP API accepts."""
        return list(self.callers)

    @cached_property
    def callers(self) -> dict[str, str]:
        """{token: caller name} from SPDIST_API_TOKENS; ValueError names a bad entry, never
        its token (so it is checked here, not by a validator that would echo the input)."""
        from worker.callers import parse_tokens

        return parse_tokens(self.api_tokens.get_secret_value()) if self.api_tokens else {}

    @cached_property
    def operator_names(self) -> frozenset[str]:
        """SPDIST_OPERATORS: callers that may act on every caller's requests."""
        return frozenset(n.strip() for n in self.operators.split(",") if n.strip())

    @cached_property
    def hold_project_ids(self) -> frozenset[str]:
        """SPDIST_HOLD_PROJECTS: projects whose auto-distributed requests start `held`."""
        return frozenset(p.strip().lower() for p in self.hold_projects.split(",") if p.strip())

    @cached_property
    def callback_host_set(self) -> frozenset[str]:
        """SPDIST_CALLBACK_HOSTS: the hosts (and host:port) callback URLs may point at."""
        from worker.callbacks import parse_hosts

        return parse_hosts(self.callback_hosts)

    def start_problems(self) -> tuple[list[str], list[str]]:
        """(errors, warnings) worth saying when a process starts; errors stop it."""
        errors, warnings = [], []
        try:
            if not self.callers:
                warnings.append("SPDIST_API_TOKENS is not set: every /v1 route answers 401")
        except ValueError as exc:
            errors.append(f"SPDIST_API_TOKENS: {exc}")
            return errors, warnings
        unknown = sorted(self.operator_names - set(self.callers.values()))
        if unknown:
            warnings.append(f"SPDIST_OPERATORS names no caller of SPDIST_API_TOKENS: {unknown}")
        return errors, warnings


class KeyRing:
    """API keys by userId: the inline setting plus a JSON file re-read when it changes."""

    def __init__(self, settings: Settings) -> None:
        self._inline = {k: v.get_secret_value() for k, v in settings.api_keys.items()}
        self._path = settings.api_keys_file
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._from_file: dict[str, str] = {}

    def _refresh(self) -> None:
        if self._path is None:
            return
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            self._from_file, self._stamp = {}, None
            return
        stamp = (st.st_mtime, st.st_size)
        with self._lock:
            if stamp == self._stamp:
                return
            try:
                data = json.loads(Path(self._path).read_text())
            except (OSError, ValueError) as exc:  # half-written during rotation: keep the old keys
                log.warning(
                    "SPDIST_API_KEYS_FILE unreadable, keeping the previous keys: %s",
                    type(exc).__name__,
                )
                return
            if not isinstance(data, dict):
                log.warning(
                    "SPDIST_API_KEYS_FILE must hold a JSON object; keeping the previous keys"
                )
                return
            self._from_file = {str(k): str(v) for k, v in data.items()}
            self._stamp = stamp

    def get(self, user_id: str) -> str | None:
        """The key for this user, or None; the file wins over the inline setting."""
        self._refresh()
        return self._from_file.get(user_id) or self._inline.get(user_id)

    def __contains__(self, user_id: str) -> bool:
        return self.get(user_id) is not None


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()


@lru_cache
def get_keyring() -> KeyRing:
    """The process's key ring."""
    return KeyRing(get_settings())
