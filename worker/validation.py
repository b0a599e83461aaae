"""One verdict for every input, whichever door it came in by: the API, the Celery task, the CLI.

Each check raises `ValidationError` naming the field (or `NotFoundError` for an id that
cannot be one of ours), so every caller answers the same input the same way; nothing
invalid reaches SQL, where it would come back as a driver error instead of a reason.
"""

from __future__ import annotations

import re
from typing import Any

from worker.contract import HEX24_PATTERN, PRIORITY_MAX, PRIORITY_MIN, REQUEST_ID_PATTERN
from worker.errors import NotFoundError, ValidationError

HEX24 = re.compile(HEX24_PATTERN)
REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
MAX_KEY_CHARS = 255
PRIORITY_RANGE = range(PRIORITY_MIN, PRIORITY_MAX + 1)


def hex24(name: str, value: object) -> str:
    """A 24-hex-digit id, lower-cased; the whole value must match (no trailing newline)."""
    if not isinstance(value, str) or not HEX24.fullmatch(value):
        raise ValidationError(f"{name} must be 24 hexadecimal characters", field=name)
    return value.lower()


def priority(value: object) -> int:
    """An integer from PRIORITY_MIN to PRIORITY_MAX (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in PRIORITY_RANGE:
        message = f"priority must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}"
        raise ValidationError(message, field="priority")
    return value


def flag(name: str, value: object) -> bool:
    """A real boolean: the string "false" is not one (it would be true to `bool`)."""
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be true or false", field=name)
    return value


def idempotency_key(value: object, *, field: str = "Idempotency-Key") -> str:
    """The key without surrounding spaces: 1-255 printable characters."""
    if not isinstance(value, str):
        raise ValidationError("the idempotency key must be a string", field=field)
    key = value.strip(" \t")
    if not key or len(key) > MAX_KEY_CHARS:
        message = f"the idempotency key must be 1 to {MAX_KEY_CHARS} characters"
        raise ValidationError(message, field=field)
    if not text_ok(key) or not key.isprintable():
        raise ValidationError("the idempotency key holds a control character", field=field)
    return key


def request_id(value: object) -> str:
    """A request id (32 lower-case hex digits); anything else names no request: NotFoundError."""
    if not isinstance(value, str) or not REQUEST_ID.fullmatch(value):
        raise NotFoundError(f"no distribution {str(value)[:40]!r}")
    return value


def text_ok(value: str) -> bool:
    """Whether SQL can store the text: no NUL, no lone surrogate (not encodable as UTF-8)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def bad_text(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) inside `value` that SQL could not store."""
    if isinstance(value, str):
        return None if text_ok(value) else path or "body"
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if not text_ok(str(k)):
                return path or "body"
            found = bad_text(v, where)
            if found:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = bad_text(v, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None
