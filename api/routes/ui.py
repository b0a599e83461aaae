"""`/ui/`: the operator's console, served by spdist itself (no CDN, works offline).

The token is asked for once and kept in an HttpOnly, SameSite=Strict cookie. Page actions
(cancel, retry, release) are forwarded in-process to the `/v1` routes with that token as the
bearer, so the API's own rules (who may act on what) apply to the console unchanged.
CSRF: besides SameSite=Strict, every POST must come from this origin and carry the
`X-Spdist-Csrf` header equal to the `spdist_csrf` cookie (a double-submit token).
"""

from __future__ import annotations

import hmac
import secrets
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from api.deps import CtxDep, token_ok
from worker import overview
from worker.callers import identify
from worker.context import Context
from worker.contract import HEX24_PATTERN

router = APIRouter(prefix="/ui", tags=["console"], include_in_schema=False)
STATIC = Path(str(files("api.static")))
TOKEN_COOKIE = "spdist_token"
CSRF_COOKIE = "spdist_csrf"
CSRF_HEADER = "x-spdist-csrf"
MAX_TOKEN = 1024
Action = Literal["cancel", "retry", "release"]
# The page's own script and style only: no inline code, nothing from elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _operator(token: str, ctx: Context) -> bool:
    """Whether the token's caller is one of SPDIST_OPERATORS (who may open the console)."""
    return identify(token, ctx.settings.callers) in ctx.settings.operator_names


def _signed_in(request: Request, ctx: Context) -> str | None:
    """The cookie's token when it is one of SPDIST_API_TOKENS and an operator's."""
    token = request.cookies.get(TOKEN_COOKIE, "")
    if token and len(token) <= MAX_TOKEN and token_ok(token, ctx.settings.token_list()):
        return token if _operator(token, ctx) else None
    return None


def _need_token(request: Request, ctx: Context) -> str:
    token = _signed_in(request, ctx)
    if token is None:
        raise HTTPException(
            401, "sign in at /ui/ with an operator's token (SPDIST_API_TOKENS, SPDIST_OPERATORS)"
        )
    return token


def _same_origin(request: Request) -> bool:
    """The POST comes from a page of this host (Origin, else Referer)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return False
    parts = urlsplit(source)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


def _need_csrf(request: Request) -> None:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not (_same_origin(request) and cookie and hmac.compare_digest(cookie, header)):
        raise HTTPException(403, "cross-site request refused: reload the console and try again")


def _page(name: str) -> FileResponse:
    response = FileResponse(STATIC / name, media_type="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@router.get("/")
def console(request: Request, ctx: CtxDep) -> Response:
    """The console, or the sign-in form when the cookie holds no valid token."""
    return _page("console.html" if _signed_in(request, ctx) else "login.html")


@router.get("")
def console_slash() -> RedirectResponse:
    """`/ui` → `/ui/` (the page's relative links need the slash)."""
    return RedirectResponse("/ui/", status_code=308)


@router.get("/static/{name}")
def static(name: Literal["console.js", "console.css", "login.js"]) -> FileResponse:
    """The console's own script and style."""
    kind = "text/css" if name.endswith(".css") else "text/javascript"
    response = FileResponse(STATIC / name, media_type=kind)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@router.post("/login")
async def login(request: Request, ctx: CtxDep) -> Response:
    """Check the token once, then keep it in an HttpOnly, SameSite=Strict cookie."""
    if not _same_origin(request):
        raise HTTPException(403, "cross-site sign-in refused")
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    if not token or len(token) > MAX_TOKEN or not token_ok(token, ctx.settings.token_list()):
        return RedirectResponse("/ui/?denied=1", status_code=303)
    if not _operator(token, ctx):
        return RedirectResponse("/ui/?denied=operator", status_code=303)
    response = RedirectResponse("/ui/", status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(
        TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/ui"
    )
    csrf = secrets.token_urlsafe(24)
    response.set_cookie(CSRF_COOKIE, csrf, samesite="strict", secure=secure, path="/ui")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """Forget the token."""
    _need_csrf(request)
    response = JSONResponse({"signedOut": True})
    response.delete_cookie(TOKEN_COOKIE, path="/ui")
    response.delete_cookie(CSRF_COOKIE, path="/ui")
    return response


def _overview(ctx: Context, user: str | None, hours: float) -> dict[str, Any]:
    with ctx.sessions() as session:
        return overview.overview(ctx, session, user=user, hours=hours)


@router.get("/api/overview")
async def overview_data(
    request: Request,
    ctx: CtxDep,
    user: Annotated[str | None, Query(pattern=f"^{HEX24_PATTERN}$")] = None,
    hours: Annotated[float, Query(gt=0, le=72)] = 6,
) -> dict[str, Any]:
    """Lanes, held requests, recent attempts and, with `user`, that user's time line."""
    _need_token(request, ctx)
    return await run_in_threadpool(_overview, ctx, user.lower() if user else None, hours)


def _v1(request_id: str) -> str:
    return f"/v1/distributions/{quote(request_id, safe='')}"


async def _forward(request: Request, method: str, path: str, token: str) -> JSONResponse:
    """The `/v1` route's own answer, asked in-process with the console's token."""
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://spdist.console") as c:
        r = await c.request(method, path, headers={"Authorization": f"Bearer {token}"})
    is_json = r.headers.get("content-type", "").startswith("application/json")
    return JSONResponse(
        r.json() if is_json else {"detail": r.text[:200]}, status_code=r.status_code
    )


@router.get("/api/distributions/{request_id}")
async def history(request_id: str, request: Request, ctx: CtxDep) -> JSONResponse:
    """One request with its attempts (`GET /v1/distributions/{id}`)."""
    token = _need_token(request, ctx)
    return await _forward(request, "GET", _v1(request_id), token)


@router.post("/api/distributions/{request_id}/{action}")
async def act(request_id: str, action: Action, request: Request, ctx: CtxDep) -> JSONResponse:
    """Cancel, retry or release through `POST /v1/distributions/{id}/{action}`."""
    token = _need_token(request, ctx)
    _need_csrf(request)
    return await _forward(request, "POST", f"{_v1(request_id)}/{action}", token)
