"""`/v1/webhooks/streampixel/{token}`: store the event, answer 204, act in the worker."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Path, Request, Response

from api.deps import CtxDep
from api.edge import webhook_token_ok
from api.schemas import Problem, WebhookIn
from worker import validation, webhooks
from worker.errors import ValidationError

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
Token = Annotated[str, Path(max_length=512, description="SPDIST_WEBHOOK_TOKEN.")]


async def check_token(token: Token, ctx: CtxDep) -> None:
    """404 unless the path carries SPDIST_WEBHOOK_TOKEN (unset: always 404); api/edge.py
    has checked already, before the body was read."""
    if not webhook_token_ok(token, ctx):
        raise HTTPException(404, "Not Found")


@router.post(
    "/streampixel/{token}",
    status_code=204,
    response_class=Response,
    dependencies=[Depends(check_token)],
    responses={
        404: {"model": Problem, "description": "Wrong token, or webhooks are off."},
        422: {"model": Problem, "description": "Not a Streampixel webhook payload."},
    },
)
def streampixel(
    token: Token, body: WebhookIn, ctx: CtxDep, request: Request, background: BackgroundTasks
) -> Response:
    """Streampixel gives us 10 s and never retries: store first, answer, act later.

    An identical delivery is stored once and acted on once; any other is stored.
    """
    payload: dict[str, Any] = body.model_dump(mode="json", exclude_unset=True)
    bad = validation.bad_text(payload)
    if bad is not None:
        raise ValidationError("holds a NUL or a character UTF-8 cannot encode", field=bad)
    event_id = webhooks.store(ctx, payload)
    if event_id is not None:
        send_event = request.app.state.send_webhook_event
        background.add_task(send_event, event_id, body.event, body.uploadId, body.projectId)
    return Response(status_code=204)
