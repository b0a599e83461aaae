"""Callers: who made a request, and who may act on it.

A caller is named by its entry in SPDIST_API_TOKENS (`name=token`); a bare token gets a
name derived from a hash of it, stable across restarts and useless for finding the token.
spdist's own callers (the CLI, the Celery task, auto-distribution) carry names with a `:`,
which no token's name may contain, so no HTTP caller can reach their requests or their
Idempotency-Keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

from worker.errors import ForbiddenError

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
CLI = "spdist:cli"
TASK = "spdist:task"
AUTO = "spdist:auto"
LEGACY = "spdist:legacy"  # requests stored before callers had names (migration 0005)


def bare_name(token: str) -> str:
    """The name of a token given without one: `token-` and 12 hex digits of its sha256."""
    return "token-" + hashlib.sha256(b"spdist-caller:" + token.encode()).hexdigest()[:12]


def parse_tokens(raw: str) -> dict[str, str]:
    """`name=token,token2` → {token: name}; ValueError names the entry (never the token)."""
    named: dict[str, str] = {}
    for number, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            continue
        name, sep, token = entry.partition("=")
        name, token = (name.strip(), token.strip()) if sep else (bare_name(entry), entry)
        _check_entry(number, name, token, named)
        named[token] = name
    return named


def _check_entry(number: int, name: str, token: str, named: dict[str, str]) -> None:
    if not NAME.fullmatch(name):
        raise ValueError(f"entry {number}: a caller's name is 1-64 of letters, digits, '._-'")
    if not token or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise ValueError(f"entry {number}: the token is empty or holds spaces or controls")
    if token in named:
        raise ValueError(f"entry {number}: this token is listed twice")
    if name in named.values():
        raise ValueError(f"entry {number}: the name {name!r} is given to two tokens")


def identify(given: str, tokens: dict[str, str]) -> str | None:
    """The name of the caller whose token is `given`, in time independent of where it differs."""
    found: str | None = None
    for token, name in tokens.items():
        if hmac.compare_digest(given.encode(), token.encode()):
            found = name
    return found


def valid_name(name: object) -> bool:
    """Whether `name` is a caller's name an outside caller may carry."""
    return isinstance(name, str) and NAME.fullmatch(name) is not None


def may_act(caller: str | None, created_by: str, operators: Iterable[str]) -> bool:
    """The creator and operators may act on a request; None (the CLI, on the host) may too."""
    return caller is None or caller == created_by or caller in set(operators)


def authorize(caller: str | None, created_by: str, operators: Iterable[str], action: str) -> None:
    """ForbiddenError unless `caller` may `action` a request made by `created_by`."""
    if not may_act(caller, created_by, operators):
        raise ForbiddenError(
            f"only the caller that made this request, or an operator, may {action} it"
        )
