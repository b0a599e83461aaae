"""Dependencies of the routes, under named aliases."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from worker.context import Context, get_context

bearer = HTTPBearer(auto_error=False, description="A token from SPDIST_API_TOKENS.")


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in
# the thread pool, and that hop cost more than the rest of an enqueue's CPU.
async def get_ctx(request: Request) -> Context:
    """The context the app was built with, else the process's own."""
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


async def require_token(
    ctx: CtxDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 unless the request carries one of SPDIST_API_TOKENS as a bearer token."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise _unauthorized("a bearer token is required")
    if not token_ok(creds.credentials, ctx.settings.token_list()):
        raise _unauthorized("the bearer token is not valid")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


AuthDep = Depends(require_token)
