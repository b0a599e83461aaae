"""The shapes the interface fixes (README, HTTP API), defined once: the ids, the priority
range, the fields of the Distribution and Attempt objects. The API's schemas
(api/schemas.py), the core's validator (validation.py) and the views (views.py) all take
them from here, and tests/unit/test_contract.py holds the three to it."""

from __future__ import annotations

HEX24_PATTERN = "[0-9a-fA-F]{24}"  # userId, projectId, uploadId: Streampixel's ObjectIds
REQUEST_ID_PATTERN = "[0-9a-f]{32}"  # a distribution's id (ours)
PRIORITY_MIN, PRIORITY_MAX = -100, 100  # higher goes first; 0 by default
PRIORITY_DEFAULT = 0

DISTRIBUTION_FIELDS = (
    "id",
    "userId",
    "projectId",
    "uploadId",
    "priority",
    "createdBy",
    "state",
    "createdAt",
    "updatedAt",
    "nextAttemptAt",
    "position",
    "estimatedDispatchAt",
    "supersededBy",
    "message",
    "attempts",
)
ATTEMPT_FIELDS = (
    "number",
    "startedAt",
    "finishedAt",
    "httpStatus",
    "outcome",
    "message",
    "worker",
)
