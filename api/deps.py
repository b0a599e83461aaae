"""Dependencies of the routes, under named aliases."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from worker.callers import identify
from worker.context import Context, get_context


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in
# the thread pool, and that hop cost more than the rest of an enqueue's CPU.
async def get_ctx(request: Request) -> Context:
    """The context the app was built with, else the process's own."""
    return _context(request)


def _context(request: HTTPConnection) -> Context:
    ctx: Context | None = getattr(request.app.state, "ctx", None)
    return ctx if ctx is not None else get_context()


CtxDep = Annotated[Context, Depends(get_ctx)]


def get_session(ctx: CtxDep) -> Iterator[Session]:
    """A read session, closed after the request."""
    with ctx.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def token_ok(given: str, accepted: list[str]) -> bool:
    """Whether `given` is one of `accepted`, in time independent of where they differ."""
    found = False
    for token in accepted:
        found |= hmac.compare_digest(given.encode(), token.encode())
    return found


class BearerToken(HTTPBearer):
    """401 unless the request carries one of SPDIST_API_TOKENS as a bearer token; gives
    the caller's name. api/edge.py checks it before the body is read and leaves the name in
    the request's state; this dependency reads it (and checks for itself without the edge).

    The scheme (for OpenAPI) and the check in one dependency: as three (the scheme, the
    context, the check) they cost the enqueue route more CPU in FastAPI's resolving
    (BENCHMARKS.md, design measurements)."""

    async def __call__(self, request: HTTPConnection) -> str:  # type: ignore[override]
        caller = request.scope.get("state", {}).get("caller")
        if isinstance(caller, str):
            return caller
        return caller_of(request.headers.get("authorization"), _context(request))


def caller_of(authorization: str | None, ctx: Context) -> str:
    """The caller's name from an Authorization header; HTTPException 401 otherwise."""
    scheme, given = get_authorization_scheme_param(authorization)
    if scheme.lower() != "bearer" or not given:
        raise _unauthorized("a bearer token is required")
    name = identify(given, ctx.settings.callers)
    if name is None:
        raise _unauthorized("the bearer token is not valid")
    return name


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


bearer = BearerToken(scheme_name="HTTPBearer", description="A token from SPDIST_API_TOKENS.")
AuthDep = Depends(bearer)
# The same callable as AuthDep: FastAPI resolves it once per request for both.
CallerDep = Annotated[str, Depends(bearer)]
