"""The system of record: distribution requests, their attempts, webhook events, and the
per-user pacing fence."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class State(StrEnum):
    """Where a distribution request stands (README, How it works)."""

    QUEUED = "queued"
    DISPATCHING = "dispatching"
    SUCCEEDED = "succeeded"
    CONFIRMED = "confirmed"
    RETRYING = "retrying"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    HELD = "held"


# In a lane (or about to be): what a dispatch may claim. `held` is never among them.
WAITING = (State.QUEUED, State.RETRYING)
# Waiting for a call, in a lane or held back from one: what back-pressure counts and
# cancel or build.rejected may end.
PENDING = (State.HELD, *WAITING)
TERMINAL = (
    State.SUCCEEDED,
    State.CONFIRMED,
    State.FAILED,
    State.DEAD,
    State.CANCELLED,
    State.SUPERSEDED,
)


def utcnow() -> datetime:
    """Aware UTC now."""
    return datetime.now(UTC)


def new_id() -> str:
    """A request id: a UUID4 in hex, 32 characters."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware UTC datetimes; gives them back aware on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every table."""


class DistributionRequest(Base):
    """One request to distribute one upload of one project."""

    __tablename__ = "distribution_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(24))
    project_id: Mapped[str] = mapped_column(String(24))
    upload_id: Mapped[str] = mapped_column(String(24))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # Place in the user's lane among equal priorities (microseconds); a superseding
    # request inherits the place of the one it replaces.
    seq: Mapped[int] = mapped_column(BigInteger)
    coalesce: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(16), default=State.QUEUED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    superseded_by: Mapped[str | None] = mapped_column(String(32))
    # Calls made so far; the number of the next attempt row, and the claim's fencing token.
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    # Transient failures counted against SPDIST_MAX_ATTEMPTS.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    processing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_message: Mapped[str | None] = mapped_column(Text)
    # Who made the request: a caller's name (SPDIST_API_TOKENS) or one of spdist's own
    # (worker/callers.py); an Idempotency-Key is unique per caller, not globally.
    created_by: Mapped[str] = mapped_column(String(64), server_default="spdist:legacy")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # Set when the request is in SQL but may not yet be in Redis (the outbox).
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Where this request's changes of state are POSTed (worker/callbacks.py); never shown.
    callback_url: Mapped[str | None] = mapped_column(Text)

    attempts: Mapped[list[DistributionAttempt]] = relationship(
        back_populates="request", order_by="DistributionAttempt.number"
    )

    __table_args__ = (
        Index("ix_requests_lane", "user_id", "state", "priority", "seq"),
        Index("ix_requests_state_next", "state", "next_attempt_at"),
        # The reconciler's lanes with work: an index-only read of the waiting rows alone.
        Index("ix_requests_state_user", "state", "user_id"),
        Index("ix_requests_state_lease", "state", "lease_expires_at"),
        # Enqueue's "oldest queued request of this project": one probe (migration 0003).
        Index("ix_requests_project_lane", "project_id", "user_id", "state", "seq"),
        Index("ix_requests_upload", "upload_id"),
        Index("ix_requests_created", "created_at", "id"),
        Index("ix_requests_unpublished", "published_at"),
        UniqueConstraint("created_by", "idempotency_key", name="uq_requests_caller_key"),
        # Lists filtered by user, project or state, newest first, and their cursor (0006).
        Index("ix_requests_user_created", "user_id", "created_at", "id"),
        Index("ix_requests_project_created", "project_id", "created_at", "id"),
        Index("ix_requests_state_created", "state", "created_at", "id"),
    )


class DistributionAttempt(Base):
    """One call to Streampixel: written before the call, completed after it."""

    __tablename__ = "distribution_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("distribution_requests.id", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str] = mapped_column(String(24))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The pacer's slot, on the Redis server's clock (microseconds since the epoch).
    slot_us: Mapped[int] = mapped_column(BigInteger)
    # No call for this user may start before this (Redis clock, microseconds): at the
    # claim the worst case of this call, once recorded its actual send time plus the gap.
    lane_free_us: Mapped[int] = mapped_column(BigInteger)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    http_status: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))

    request: Mapped[DistributionRequest] = relationship(back_populates="attempts")

    __table_args__ = (
        UniqueConstraint("request_id", "number", name="uq_attempt_number"),
        Index("ix_attempts_user_free", "user_id", "lane_free_us"),
    )


class WebhookEvent(Base):
    """A Streampixel webhook delivery, stored raw before it is acted on."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(24))
    upload_id: Mapped[str | None] = mapped_column(String(24))
    status: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, object]] = mapped_column(JSON)
    # sha256 of the payload: Streampixel gives no event id, so only an identical delivery
    # is a duplicate (rows before migration 0005 hold "uploadId:event").
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_webhooks_unprocessed", "processed_at"),
        # The dispatch's "was this build rejected?": one probe (migration 0005).
        Index("ix_webhooks_upload_event", "upload_id", "event"),
        Index("ix_webhooks_received", "received_at"),  # retention (0006)
    )


class CallbackDelivery(Base):
    """One try to POST one event of a request to its callback URL (migration 0007).

    A trigger writes an event's first try in the transaction of the change of state; the
    deliverer freezes `body` at that try, and a failed try's row is finished in the same
    transaction that writes the next one. `outcome`: `delivered` (a 2xx), `failed` (tried
    again later), `expired` (failed, and the next try would fall past `expires_at`).
    """

    __tablename__ = "callback_deliveries"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("distribution_requests.id", ondelete="CASCADE")
    )
    event_no: Mapped[int] = mapped_column(Integer)  # the request's events, in commit order
    event: Mapped[str] = mapped_column(String(32))
    try_no: Mapped[int] = mapped_column(Integer)
    body: Mapped[str | None] = mapped_column(Text)  # the exact bytes signed, from try 1 on
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    http_status: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("request_id", "event_no", "try_no", name="uq_callback_try"),
        Index(
            "ix_callbacks_open",
            "due_at",
            postgresql_where=text("finished_at IS NULL"),
            sqlite_where=text("finished_at IS NULL"),
        ),
    )


class PacingFence(Base):
    """Per userId, the instant before which no call may leave (Redis clock, microseconds).

    Moved by the claim, in the claim's own statement, to the worst case of the call it makes
    (the latest it may fire and send, plus the interval), and brought back to the actual
    send time plus the interval once the answer is recorded. A claim for an earlier slot is
    refused, whatever Redis remembers: the pacing holds when Redis state is older than SQL.
    """

    __tablename__ = "pacing_fences"

    user_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    not_before_us: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MetricTotal(Base):
    """A /metrics count, kept by triggers (migration 0006): requests by state, attempts by
    outcome, the delay histogram's buckets (`series`, `label`); `total` is a sum of seconds."""

    __tablename__ = "metric_totals"

    series: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)


class MetricDelta(Base):
    """A change to a MetricTotal not yet folded in (PostgreSQL's statement triggers)."""

    __tablename__ = "metric_deltas"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    series: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)
