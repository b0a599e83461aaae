"""Our exceptions, grouped by what the caller should do about them.

```
SpdistError
 ├── StreampixelError            an answer (or no answer) from distribute-file
 │    ├── RetryableError         try again later
 │    │    ├── RateLimited       429; `retry_after_s` is the wait Streampixel stated, if any
 │    │    ├── StillProcessing   400 "file has no URL": the build is still processing
 │    │    ├── ServerError       5xx, or a body that is not the documented JSON
 │    │    ├── CallTimeout       connect/read/write/pool timeout
 │    │    └── NetworkError      connection refused/reset, protocol errors
 │    └── PermanentError         retrying will not help until someone fixes something
 │         ├── Rejected          other 400, 415, any other unexpected 4xx
 │         ├── Unauthorized      401
 │         ├── Forbidden         403
 │         └── NotFound          404
 ├── NotSent                     the call was given up before a byte left: past its send deadline
 ├── ValidationError             bad input from our own callers (bad ids etc.)
 ├── NotFoundError               no such distribution
 ├── ConflictError               the distribution's state forbids the change
 ├── ForbiddenError              the caller may not act on another caller's request
 ├── TooManyWaiting              the user's lane is full (SPDIST_MAX_WAITING_PER_USER)
 └── PacerUnavailable            the pacer could not reach Redis: fail closed
```

Each `StreampixelError` subclass names its attempt `outcome` (README, HTTP API).
Messages never carry an API key: whoever builds one scrubs the key out first.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

MAX_MESSAGE_CHARS = 500


class Outcome(StrEnum):
    """How one call to Streampixel ended, as recorded on an attempt."""

    TRIGGERED = "triggered"
    RATE_LIMITED = "rate_limited"
    PROCESSING = "processing"
    REJECTED = "rejected"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"
    UNKNOWN = "unknown"


class SpdistError(Exception):
    """Base class of every error spdist raises on purpose."""


class StreampixelError(SpdistError):
    """A call to distribute-file did not trigger a distribution."""

    outcome: ClassVar[Outcome] = Outcome.UNKNOWN

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        self.message = message[:MAX_MESSAGE_CHARS]
        self.http_status = http_status
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class RetryableError(StreampixelError):
    """The same call may succeed later."""


class PermanentError(StreampixelError):
    """The same call will keep failing until someone changes something."""


class RateLimited(RetryableError):
    """429: the user's budget of one call per interval is spent."""

    outcome = Outcome.RATE_LIMITED

    def __init__(
        self, message: str, *, http_status: int | None = 429, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, http_status=http_status)
        self.retry_after_s = retry_after_s


class StillProcessing(RetryableError):
    """400 "file has no URL": the upload has not finished processing."""

    outcome = Outcome.PROCESSING


class ServerError(RetryableError):
    """5xx, or an answer whose body is not the documented JSON."""

    outcome = Outcome.SERVER_ERROR


class CallTimeout(RetryableError):
    """The call timed out; a read timeout may still have triggered a distribution."""

    outcome = Outcome.TIMEOUT


class NetworkError(RetryableError):
    """The connection failed (refused, reset, protocol error)."""

    outcome = Outcome.NETWORK_ERROR


class Rejected(PermanentError):
    """400 other than "no URL", 415, or another unexpected 4xx."""

    outcome = Outcome.REJECTED


class Unauthorized(PermanentError):
    """401: invalid user or API key."""

    outcome = Outcome.UNAUTHORIZED


class Forbidden(PermanentError):
    """403: access denied or project disabled."""

    outcome = Outcome.FORBIDDEN


class NotFound(PermanentError):
    """404: project or file not found."""

    outcome = Outcome.NOT_FOUND


class NotSent(SpdistError):
    """No byte of the request left: it would have left later than its pacing allows."""


class ValidationError(SpdistError):
    """Bad input from our own callers; `field` names the offending field, if one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class NotFoundError(SpdistError):
    """No such distribution (or other record)."""


class ConflictError(SpdistError):
    """The record is not in a state that allows this change."""


class PacerUnavailable(SpdistError):
    """The pacer's Redis failed; callers must not call Streampixel (fail closed)."""


class ForbiddenError(SpdistError):
    """The caller is neither the request's creator nor an operator."""


class TooManyWaiting(SpdistError):
    """The user has SPDIST_MAX_WAITING_PER_USER requests waiting; try after `retry_after_s`."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)
