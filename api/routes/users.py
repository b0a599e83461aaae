"""`/v1/users/{userId}/lane`: a user's waiting requests in order, with estimated times."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import AuthDep, CtxDep, SessionDep
from api.routes.distributions import ERRORS
from api.schemas import Hex24, Lane
from worker import views

router = APIRouter(prefix="/v1/users", tags=["lanes"], dependencies=[AuthDep])


@router.get("/{userId}/lane", response_model=Lane, responses=ERRORS)
def lane(
    userId: Hex24,
    ctx: CtxDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Position and estimated dispatch time of each waiting request, `limit` at a time
    (pass `nextCursor` back as `cursor`); `waiting` counts them all.

    Estimates start at the pacer's next free slot and add one interval per request ahead,
    assuming every call succeeds; a request retrying later keeps its own time.
    """
    return views.lane_page(ctx, session, userId.lower(), limit=limit, cursor=cursor)
