"""First-run problems named in one line each, with the fix: the setting or the command."""

from __future__ import annotations

import socket
from collections.abc import Iterable

UNMIGRATED = "the database has no spdist tables yet: run `spdist migrate` (SPDIST_DATABASE_URL)"
NO_API_KEY = (
    "no API key set: every call to Streampixel would be refused; "
    'set SPDIST_API_KEYS=\'{"<userId>": "<apiKey>"}\' or SPDIST_API_KEYS_FILE'
)
# What SQLite and PostgreSQL say when a table is missing.
MISSING_TABLE = ("no such table", "undefinedtable", "does not exist")


def unmigrated(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says one of spdist's tables is missing."""
    seen: BaseException | None = exc
    while seen is not None:
        text = f"{type(seen).__name__} {seen}".lower()
        if any(m in text for m in MISSING_TABLE) and ("table" in text or "relation" in text):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on host:port (so our server could not)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def taken_ports(wanted: Iterable[tuple[int, str]]) -> list[str]:
    """One line per taken port, naming the setting that moves it."""
    return [
        f"port {port} is already in use: stop what listens there or set {setting} to a free port"
        for port, setting in wanted
        if port_taken(port)
    ]
