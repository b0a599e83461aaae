"""`/v1/projects/{projectId}/rollback`: distribute the project's previous build again."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from starlette.concurrency import run_in_threadpool

from api.deps import AuthDep, CallerDep, CtxDep
from api.routes.distributions import ERRORS, _describe
from api.schemas import Distribution, Hex24, Problem, RollbackIn
from worker import rollback as rollbacks

router = APIRouter(prefix="/v1/projects", tags=["projects"], dependencies=[AuthDep])


@router.post(
    "/{projectId}/rollback",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Distribution,
    responses={
        404: {"model": Problem, "description": "No earlier (or no such) distributed upload."},
        429: {"model": Problem, "description": "SPDIST_MAX_WAITING_PER_USER reached."},
        **ERRORS,
    },
)
async def rollback(
    projectId: Hex24, ctx: CtxDep, caller: CallerDep, body: RollbackIn | None = None
) -> dict[str, Any]:
    """A new request, first in its lane (priority 100), for the project's previous upload
    that reached succeeded or confirmed before the latest one (or `toUploadId`)."""
    target = body.toUploadId.lower() if body and body.toUploadId else None
    req = await run_in_threadpool(rollbacks.rollback, ctx, projectId.lower(), target, caller)
    return await run_in_threadpool(_describe, ctx, req.id)
