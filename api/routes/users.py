"""`/v1/users/{userId}/lane`: a user's waiting requests in order, with estimated times."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import AuthDep, CtxDep, SessionDep
from api.routes.distributions import ERRORS
from api.schemas import Hex24, Lane
from worker import views

router = APIRouter(prefix="/v1/users", tags=["lanes"], dependencies=[AuthDep])


@router.get("/{userId}/lane", response_model=Lane, responses=ERRORS)
def lane(userId: Hex24, ctx: CtxDep, session: SessionDep) -> dict[str, Any]:
    """Position and estimated dispatch time of each waiting request.

    Estimates start at the pacer's next free slot and add one interval per request ahead,
    assuming every call succeeds; a request retrying later keeps its own time.
    """
    return views.lane(ctx, session, userId.lower()).as_dict()
