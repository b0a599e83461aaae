"""How the `spdist` command line shows things to people: rich tables within 100 columns,
short ids, times relative to now. `--json` output does not come through here."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.errors import NotFoundError, ValidationError
from worker.models import DistributionRequest

WIDTH = 100
SHORT = 8
MIN_PREFIX = 4
ID_LENGTH = 32


def console() -> Console:
    """Stdout, never wider than WIDTH columns (narrower when the terminal is)."""
    return Console(
        width=min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns),
        highlight=False,
        soft_wrap=False,
    )


def short(request_id: str | None) -> str:
    """The id's first characters: what `show`, `cancel` and `retry` accept."""
    return (request_id or "")[:SHORT]


def tail(object_id: str | None) -> str:
    """A 24-hex id's last characters: ObjectIds made together differ at their end."""
    return f"…{object_id[-7:]}" if object_id and len(object_id) > SHORT else object_id or ""


def resolve_id(session: Session, given: str) -> str:
    """The full id a unique prefix (of at least MIN_PREFIX characters) names."""
    given = given.strip().lower()
    if len(given) >= ID_LENGTH:
        return given
    if len(given) < MIN_PREFIX:
        raise ValidationError(f"id prefix {given!r} is too short: give at least {MIN_PREFIX}")
    escaped = given.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    found = session.scalars(
        select(DistributionRequest.id)
        .where(DistributionRequest.id.like(f"{escaped}%", escape="\\"))
        .limit(3)
    ).all()
    if not found:
        raise NotFoundError(f"no distribution {given}")
    if len(found) > 1:
        raise ValidationError(f"id prefix {given} matches {', '.join(found[:2])}…: give more")
    return found[0]


def relative(iso: str | None, now: datetime | None = None) -> str:
    """`in 3 s`, `2 min ago`, `1 h 5 min ago`; '' for no time."""
    if not iso:
        return ""
    then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = round((then - (now or _now())).total_seconds())
    span = abs(seconds)
    if span < 60:
        text = f"{span} s"
    elif span < 3600:
        text = f"{span // 60} min {span % 60} s" if span < 600 else f"{span // 60} min"
    elif span < 86400:
        text = f"{span // 3600} h {span % 3600 // 60} min"
    else:
        text = f"{span // 86400} d {span % 86400 // 3600} h"
    return "now" if span == 0 else f"in {text}" if seconds > 0 else f"{text} ago"


def _now() -> datetime:
    from worker.models import utcnow

    return utcnow()


def _table(columns: list[str], rows: list[list[str]], *, reason: bool = False) -> Table:
    """Columns as wide as their widest cell; only the last, `reason`, gives way (ellipsis)."""
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    fixed = columns[:-1] if reason else columns
    for n, name in enumerate(fixed):
        width = max([len(name), *(len(r[n]) for r in rows)])
        table.add_column(name, no_wrap=True, min_width=width)
    if reason:
        table.add_column(columns[-1], overflow="ellipsis", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def distributions_table(rows: list[dict[str, Any]]) -> RenderableType:
    """`spdist ls`: one line per request, with its reason when it has one."""
    if not rows:
        return Text("no distributions match")
    columns = ["id", "state", "user", "project", "upload", "created", "next", "reason"]
    return _table(columns, [_row(d) for d in rows], reason=True)


def _row(d: dict[str, Any]) -> list[str]:
    nxt = d.get("estimatedDispatchAt") or d.get("nextAttemptAt")
    return [
        short(d["id"]),
        d["state"],
        tail(d["userId"]),
        tail(d["projectId"]),
        tail(d["uploadId"]),
        relative(d["createdAt"]),
        relative(nxt),
        d.get("message") or "",
    ]


def distribution_view(d: dict[str, Any]) -> RenderableType:
    """`spdist show`: the request's facts, then one line per attempt."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    for label, key in (
        ("id", "id"),
        ("state", "state"),
        ("user", "userId"),
        ("project", "projectId"),
        ("upload", "uploadId"),
        ("priority", "priority"),
        ("position", "position"),
        ("superseded by", "supersededBy"),
        ("reason", "message"),
    ):
        if d.get(key) is not None:
            facts.add_row(label, str(d[key]))
    for label, key in (
        ("created", "createdAt"),
        ("updated", "updatedAt"),
        ("next attempt", "nextAttemptAt"),
        ("estimated dispatch", "estimatedDispatchAt"),
    ):
        if d.get(key):
            facts.add_row(label, f"{relative(d[key])}  ({d[key][:19]}Z)")
    if not d.get("attempts"):
        return Group(facts, Text("no attempts yet"))
    rows = [
        [
            str(a["number"]),
            relative(a["startedAt"]),
            a["outcome"] or "in flight",
            str(a["httpStatus"] or "-"),
            a["message"] or "",
        ]
        for a in d["attempts"]
    ]
    return Group(
        facts,
        Text(""),
        _table(["#", "started", "outcome", "HTTP", "Streampixel said"], rows, reason=True),
    )


def lanes_view(lanes: list[dict[str, Any]], interval_s: float) -> RenderableType:
    """`spdist lanes`: each lane's next slot, then its waiting requests with their ETAs."""
    if not lanes:
        return Text("no requests waiting")
    parts: list[RenderableType] = [Text(f"one call per user every {interval_s:g} s")]
    for lane in lanes:
        parts.append(
            Text(
                f"\nuser {lane['userId']}  next slot {relative(lane['nextSlotAt'])}"
                f"  {len(lane['items'])} waiting",
                style="bold",
            )
        )
        rows = [
            [
                str(i["position"]),
                short(i["id"]),
                tail(i["projectId"]),
                tail(i["uploadId"]),
                str(i["priority"]),
                i["state"],
                relative(i["estimatedDispatchAt"]),
            ]
            for i in lane["items"]
        ]
        parts.append(_table(["#", "id", "project", "upload", "prio", "state", "dispatch"], rows))
    return Group(*parts)


def watch(render: Callable[[], RenderableType], every_s: float = 1.0) -> int:
    """Redraw `render()` in place every `every_s` until Ctrl-C."""
    try:
        with Live(render(), console=console(), auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(every_s)
                live.update(render(), refresh=True)
    except KeyboardInterrupt:
        return 0
