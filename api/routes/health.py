"""`/healthz`, `/readyz` and `/metrics`: no API token (SPDIST_METRICS_TOKEN may guard /metrics)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import CtxDep, token_ok
from api.schemas import Health
from api.shared_reading import SharedReading
from worker.context import Context

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(ctx: CtxDep) -> JSONResponse:
    """The database and Redis both answer; 503 names the one that does not."""
    checks = {"database": _check(lambda: _ping_db(ctx)), "redis": _check(ctx.pacer.redis.ping)}
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


def _ping_db(ctx: CtxDep) -> None:
    with ctx.sessions() as session:
        session.execute(text("SELECT 1"))


def _check(probe: object) -> str:
    try:
        probe()  # type: ignore[operator]
    except Exception as exc:  # any failure means "not ready"; the log says why
        log.warning("readiness check failed: %s", type(exc).__name__)
        return "unavailable"
    return "ok"


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(ctx: CtxDep, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Prometheus text, read from SQL (and the pacer) after the scrape arrived, one reading
    at a time shared by the scrapes waiting for it (api/shared_reading.py); with
    SPDIST_METRICS_TOKEN set, only for `Authorization: Bearer <it>` (else 401)."""
    want = ctx.settings.metrics_token
    if want is not None:
        scheme, given = get_authorization_scheme_param(authorization)
        if scheme.lower() != "bearer" or not token_ok(given, [want.get_secret_value()]):
            return JSONResponse(
                {"detail": "/metrics wants the bearer token SPDIST_METRICS_TOKEN"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )

    body = await _READINGS.get(id(ctx), partial(_exposition, ctx))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


READING_REST = 4.0  # after a reading, 4 times as long for the other routes: 20 % at most
_READINGS: SharedReading[bytes] = SharedReading(rest=READING_REST)


def _exposition(ctx: Context) -> bytes:
    from api.metrics import registry_for
    from api.metrics_lanes import exposition
    from api.metrics_ops import OpsCollector

    registry = registry_for(ctx)
    registry.register(OpsCollector(ctx))
    return generate_latest(registry) + exposition(ctx).encode()
