"""Request and response bodies of the HTTP API; field names are camelCase."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints

from worker.contract import HEX24_PATTERN, PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN
from worker.models import State

Hex24 = Annotated[str, StringConstraints(pattern=f"^{HEX24_PATTERN}$")]
StateName = Annotated[str, Field(json_schema_extra={"enum": [s.value for s in State]})]


class DistributionIn(BaseModel):
    """Body of `POST /v1/distributions`; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    userId: Hex24
    projectId: Hex24
    uploadId: Hex24
    priority: StrictInt = Field(
        PRIORITY_DEFAULT, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Higher goes first."
    )
    coalesce: StrictBool = Field(
        True, description="Replace a queued request of the same project instead of queueing."
    )
    hold: StrictBool = Field(False, description="Start `held`: in no lane until `POST …/release`.")
    callbackUrl: str | None = Field(
        None,
        description="POSTed each change of state (README, Callbacks); its host must be in "
        "SPDIST_CALLBACK_HOSTS.",
    )


class RollbackIn(BaseModel):
    """Body of `POST /v1/projects/{projectId}/rollback`; all optional."""

    model_config = ConfigDict(extra="forbid")

    toUploadId: Hex24 | None = Field(
        None, description="Roll back to this upload (it must have reached succeeded/confirmed)."
    )


class Attempt(BaseModel):
    """One call made to Streampixel."""

    number: int
    startedAt: str | None
    finishedAt: str | None
    httpStatus: int | None
    outcome: str | None
    message: str | None
    worker: str | None


class Distribution(BaseModel):
    """A distribution request, with its attempts and, while it waits, its place in line."""

    id: str
    userId: str
    projectId: str
    uploadId: str
    priority: int
    createdBy: str
    state: StateName
    createdAt: str
    updatedAt: str
    nextAttemptAt: str | None
    position: int | None
    estimatedDispatchAt: str | None
    supersededBy: str | None
    message: str | None = None
    attempts: list[Attempt] = []


class DistributionSummary(Distribution):
    """A distribution in a list (attempts left out; GET it by id for them)."""

    attempts: list[Attempt] = Field(default_factory=list, exclude=True)


class DistributionPage(BaseModel):
    """A page of distributions, newest first."""

    items: list[DistributionSummary]
    nextCursor: str | None


class LaneEntry(BaseModel):
    """A waiting request in its user's lane."""

    id: str
    projectId: str
    uploadId: str
    priority: int
    state: str
    position: int
    estimatedDispatchAt: str


class Lane(BaseModel):
    """A user's lane."""

    userId: str
    nextSlotAt: str
    waiting: int
    items: list[LaneEntry]
    nextCursor: str | None


class WebhookIn(BaseModel):
    """A Streampixel webhook delivery; extra fields are kept as they came."""

    model_config = ConfigDict(extra="allow")

    event: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    projectId: Hex24 | None = None
    uploadId: Hex24 | None = None
    fileUrl: str | None = None
    status: Annotated[str, StringConstraints(max_length=64)] | None = None
    objection: str | None = None
    timestamp: str | None = None


class FieldError(BaseModel):
    """One invalid field."""

    field: str
    message: str


class Problem(BaseModel):
    """An error: what went wrong and, for invalid input, which field (the first of `errors`)."""

    detail: str
    field: str | None = None
    errors: list[FieldError] = []


class Health(BaseModel):
    """Liveness or readiness."""

    status: str
    checks: dict[str, str] = {}
