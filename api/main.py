"""The FastAPI app: routers, error mapping, and the body size limit.

`uvicorn api.main:app` (or `spdist api`) serves it; tests build their own with
`create_app(ctx)`. Only this package turns spdist's errors into HTTP answers.
"""

from __future__ import annotations

import gc
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import docs
from api.edge import AuthFirst
from api.enqueue_async import AsyncEnqueue
from api.routes import distributions, health, projects, ui, users, webhooks
from worker import firstrun
from worker import webhooks as webhook_service
from worker.context import Context, get_context
from worker.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PacerUnavailable,
    TooManyWaiting,
    ValidationError,
)
from worker.settings import get_settings

log = logging.getLogger(__name__)
MAX_BODY = 16 * 1024
SWITCH_INTERVAL_S = 0.0005
WEBHOOK_PATH = re.compile(r"(/v1/webhooks/streampixel/)[^\s?\"]*")


class RedactWebhookToken(logging.Filter):
    """The webhook token is a secret in the path: access logs show `***` instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                WEBHOOK_PATH.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def _redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactWebhookToken) for f in access.filters):
        access.addFilter(RedactWebhookToken())


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The routes are sync and spend most of their time waiting on SQL and Redis; past a
    # few threads per core, more threads only fight over the GIL (anyio's default is 40).
    ctx: Context | None = app.state.ctx
    _say_start_problems(ctx.settings if ctx else get_settings())
    threads = (ctx.settings if ctx else get_settings()).api_threads
    anyio.to_thread.current_default_thread_limiter().total_tokens = threads
    # A thread back from SQL or Redis waits for the GIL until the running thread gives it
    # up, 5 ms by default; an enqueue makes several such trips, so that wait was most of
    # its latency. Hand the GIL over sooner.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()  # the app's long-lived objects leave the collector's scans: shorter pauses
    # On PostgreSQL, POST /v1/distributions runs on the event loop (api/enqueue_async.py).
    ctx = ctx or get_context()
    fast = AsyncEnqueue(ctx) if AsyncEnqueue.serves_ledger(ctx.ledger) else None
    if fast is not None:
        await fast.open()
    app.state.enqueue_async = fast
    try:
        yield
    finally:
        app.state.enqueue_async = None
        if fast is not None:
            await fast.close()
        sys.setswitchinterval(previous)


def _say_start_problems(settings: Any) -> None:
    """Refuse to start on a bad SPDIST_API_TOKENS; warn, once, of what will surprise."""
    errors, warnings = settings.start_problems()
    for warning in warnings:
        log.warning("%s", warning)
    if errors:
        raise RuntimeError("; ".join(errors))


def create_app(
    ctx: Context | None = None, *, send_webhook_event: Callable[..., None] | None = None
) -> FastAPI:
    """The API; `ctx` defaults to the process's context, resolved on first request."""
    app = FastAPI(
        lifespan=_lifespan,
        title="spdist",
        version="0.1.0",
        description="Paced, durable distribution of builds through Streampixel.",
        docs_url=None,  # served by api/docs.py from local assets
        redoc_url=None,
    )
    _redact_access_log()
    app.state.ctx = ctx
    app.state.send_webhook_event = send_webhook_event or webhook_service.send_event
    for router in (distributions.router, users.router, webhooks.router, health.router):
        app.include_router(router)
    app.include_router(projects.router)
    app.include_router(ui.router)
    docs.install(app)
    _add_error_handlers(app)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_middleware(AuthFirst)  # the outermost: no body is read for an unknown caller
    return app


def _problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_field_error(e) for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}"
        return _problem(422, detail, field=first["field"], errors=errors)

    # FastAPI answers a body it cannot decode (not UTF-8) with a bare 400; it is invalid
    # input like any other, so it gets the 422 and the error shape.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:
            return _problem(422, "body: not valid JSON", field="body")
        return await http_exception_handler(request, exc)

    @app.exception_handler(ValidationError)
    async def refused(_: Request, exc: ValidationError) -> JSONResponse:
        field = exc.field or "body"
        errors = [{"field": field, "message": str(exc)}]
        return _problem(422, f"{field}: {exc}", field=field, errors=errors)

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return _problem(404, str(exc))

    @app.exception_handler(ForbiddenError)
    async def forbidden(_: Request, exc: ForbiddenError) -> JSONResponse:
        return _problem(403, str(exc))

    @app.exception_handler(TooManyWaiting)
    async def too_many(_: Request, exc: TooManyWaiting) -> JSONResponse:
        answer = _problem(429, str(exc), field="userId")
        answer.headers["Retry-After"] = str(exc.retry_after_s)
        return answer

    # Defence in depth: a value SQL cannot take (validation should have refused it) is
    # the caller's error, not ours.
    @app.exception_handler(sqlalchemy.exc.DataError)
    async def bad_data(_: Request, exc: Exception) -> JSONResponse:
        log.warning("answered 422, SQL refused a value: %s", type(exc).__name__)
        return _problem(422, "body: a value cannot be stored", field="body")

    @app.exception_handler(ConflictError)
    async def conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return _problem(409, str(exc))

    @app.exception_handler(PacerUnavailable)
    async def unavailable(_: Request, exc: PacerUnavailable) -> JSONResponse:
        log.warning("answered 503: %s", exc)
        return _problem(503, "Redis is unavailable; try again shortly")

    # A database nobody migrated: name the fix rather than the SQL error.
    @app.exception_handler(sqlalchemy.exc.ProgrammingError)
    async def database_unmigrated(_: Request, exc: Exception) -> JSONResponse:
        if firstrun.unmigrated(exc):
            log.warning("answered 503: %s", firstrun.UNMIGRATED)
            return _problem(503, firstrun.UNMIGRATED)
        log.error("answered 500, SQL error: %s", type(exc).__name__)
        return _problem(500, "internal error")

    # The database cut off or restarted: nothing was accepted, so say so and when to retry
    # (a request that must not be stored twice carries an Idempotency-Key).
    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        if firstrun.unmigrated(exc):
            log.warning("answered 503: %s", firstrun.UNMIGRATED)
            return _problem(503, firstrun.UNMIGRATED)
        log.warning("answered 503, database unavailable: %s", type(exc).__name__)
        return _problem(503, "the database is unavailable; try again shortly")


def _field_error(error: Any) -> dict[str, str]:
    """`body.userId` → `userId`; an unknown field is named, not its parent."""
    loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or "body"
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "extra_forbidden":
        message = "unknown field"
    return {"field": field, "message": message}


class BodyLimit:
    """413 for a body over `limit` bytes: by its Content-Length, or as it arrives."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if self._declared(scope) > self.limit:
            await _too_large(scope, receive, send, self.limit)
            return
        body, messages = await self._read(receive)
        if body is None:
            await _too_large(scope, receive, send, self.limit)
            return
        await self.app(scope, _replay(messages, receive), send)

    def _declared(self, scope: Scope) -> int:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return self.limit + 1
        return 0

    async def _read(self, receive: Receive) -> tuple[bytes | None, list[Message]]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), [message]
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return None, []
            if not message.get("more_body", False):
                joined = b"".join(chunks)
                return joined, [{"type": "http.request", "body": joined, "more_body": False}]


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = JSONResponse({"detail": f"request body is over {limit} bytes"}, status_code=413)
    await response(scope, receive, send)


app = create_app()
