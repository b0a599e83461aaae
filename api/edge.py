"""Who may come in, decided before anything else is read.

A request to a `/v1` route without a valid bearer token is answered `401`, and one to the
webhook with the wrong token `404`, before the body is received or parsed: an anonymous
client learns nothing from validation errors and costs no JSON parsing. The caller's name
goes into the request's state, where `api.deps.BearerToken` reads it.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import caller_of
from worker.context import Context, get_context

API_PREFIX = "/v1/"
WEBHOOK_PREFIX = "/v1/webhooks/streampixel/"


class AuthFirst:
    """Bearer check for `/v1` (webhook token check for the webhook) ahead of the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(WEBHOOK_PREFIX):
            if not webhook_token_ok(path[len(WEBHOOK_PREFIX) :], _ctx(scope)):
                await JSONResponse({"detail": "Not Found"}, 404)(scope, receive, send)
                return
        elif path.startswith(API_PREFIX):
            try:
                caller = caller_of(Headers(scope=scope).get("authorization"), _ctx(scope))
            except HTTPException as exc:
                answer = JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
                await answer(scope, receive, send)
                return
            scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


def webhook_token_ok(token: str, ctx: Context) -> bool:
    """Whether `token` is SPDIST_WEBHOOK_TOKEN (never, when it is unset)."""
    expected = ctx.settings.webhook_token
    secret = expected.get_secret_value() if expected is not None else ""
    given = token.encode(errors="surrogatepass")
    return bool(secret) and hmac.compare_digest(given, secret.encode())


def _ctx(scope: Scope) -> Context:
    ctx: Context | None = getattr(scope["app"].state, "ctx", None)
    return ctx if ctx is not None else get_context()
