"""`/v1/distributions`: enqueue, read, list, cancel and retry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import AuthDep, CallerDep, CtxDep, SessionDep
from api.enqueue_async import AsyncEnqueue
from api.schemas import Distribution, DistributionIn, DistributionPage, Hex24, Problem
from worker import distributions, holds, validation, views
from worker.context import Context
from worker.models import State

router = APIRouter(prefix="/v1/distributions", tags=["distributions"], dependencies=[AuthDep])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No valid bearer token."},
    422: {"model": Problem, "description": "Invalid input; `field` names it."},
}
# Checked by worker/validation.py (1-255 characters once surrounding spaces are taken off),
# the same check the Celery task makes.
IdempotencyKey = Annotated[
    str | None,
    Header(description="Repeat it to get the first answer back; it is yours alone."),
]


def _describe(ctx: Context, request_id: str) -> dict[str, Any]:
    with ctx.sessions() as session:
        return views.describe_one(ctx, session, distributions.get(session, request_id))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Distribution,
    responses={
        200: {"model": Distribution, "description": "The earlier request of this key."},
        409: {"model": Problem, "description": "The key was used with another body."},
        429: {"model": Problem, "description": "SPDIST_MAX_WAITING_PER_USER reached."},
        **ERRORS,
    },
)
async def create(
    body: DistributionIn,
    ctx: CtxDep,
    caller: CallerDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Store the request and put it in its user's lane (202); SQL holds it if Redis is down."""
    ids = (body.userId, body.projectId, body.uploadId)
    new = distributions.validate(
        ctx,
        *ids,
        body.priority,
        body.coalesce,
        created_by=caller,
        hold=body.hold,
        callback_url=body.callbackUrl,
    )
    if idempotency_key is not None:
        idempotency_key = validation.idempotency_key(idempotency_key)
    code = status.HTTP_202_ACCEPTED
    fast: AsyncEnqueue | None = getattr(request.app.state, "enqueue_async", None)
    if idempotency_key is None and fast is not None and fast.serves(new):
        req, placed = await fast.enqueue(new)  # PostgreSQL: no thread
    elif idempotency_key is None:
        req, placed = await run_in_threadpool(distributions.enqueue_placed, ctx, new)
    else:
        digest = distributions.body_hash(new)
        req, earlier, placed = await run_in_threadpool(
            distributions.enqueue_once, ctx, new, idempotency_key, digest
        )
        if earlier:
            code = status.HTTP_200_OK
    # Built by views as the Distribution schema says (the tests check it against the
    # schema): returned as is, not validated again on the hot path.
    content = views.enqueued_dict(ctx, req, placed)
    if content is None:
        content = await run_in_threadpool(_describe, ctx, req.id)
    return JSONResponse(content, status_code=code)


@router.get("", response_model=DistributionPage, responses=ERRORS)
def list_(
    ctx: CtxDep,
    session: SessionDep,
    userId: Hex24 | None = None,
    projectId: Hex24 | None = None,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Distributions, newest first; pass `nextCursor` back as `cursor` for the next page."""
    rows, next_cursor = views.list_distributions(
        session,
        user_id=userId.lower() if userId else None,
        project_id=projectId.lower() if projectId else None,
        state=state.value if state else None,
        limit=limit,
        cursor=cursor,
    )
    placed = views.places(ctx, session, rows)
    items = [views.distribution_dict(r, placed.get(r.id), attempts=False) for r in rows]
    return {"items": items, "nextCursor": next_cursor}


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}, **ERRORS}
CONFLICT: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "Neither its creator nor an operator."},
    409: {"model": Problem},
    **NOT_FOUND,
}


@router.get("/{request_id}", response_model=Distribution, responses=NOT_FOUND)
def read(request_id: str, ctx: CtxDep) -> dict[str, Any]:
    """One distribution with its attempts."""
    return _describe(ctx, request_id)


@router.post("/{request_id}/cancel", response_model=Distribution, responses=CONFLICT)
def cancel(request_id: str, ctx: CtxDep, caller: CallerDep) -> dict[str, Any]:
    """Cancel a waiting request; 409 once it is no longer waiting."""
    distributions.cancel(ctx, request_id, caller)
    return _describe(ctx, request_id)


@router.post(
    "/{request_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Distribution,
    responses=CONFLICT,
)
def retry(request_id: str, ctx: CtxDep, caller: CallerDep) -> dict[str, Any]:
    """Put a failed or dead request back in line; 409 for any other state."""
    distributions.retry(ctx, request_id, caller)
    return _describe(ctx, request_id)


@router.post(
    "/{request_id}/release",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Distribution,
    responses=CONFLICT,
)
def release(request_id: str, ctx: CtxDep, caller: CallerDep) -> dict[str, Any]:
    """Put a held request in line and wake its lane; 409 unless it is held."""
    holds.release(ctx, request_id, caller)
    return _describe(ctx, request_id)
