"""The console's data (worker/overview.py) on both databases: the bounded lane head matches
the whole lane's first places, and the page's lists carry what the console shows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from tests.integration.test_api import USER, close, make_ctx
from worker import distributions, overview, views
from worker.models import DistributionRequest, State, utcnow


def test_lane_head_is_the_lane_first_places(db_url: str, redis_url: str) -> None:
    ctx = make_ctx(db_url, redis_url, [])
    try:
        ids = []
        for n in range(12):
            new = distributions.NewDistribution(USER, f"{n:024x}", f"{n + 50:024x}", n % 3 - 1)
            ids.append(distributions.enqueue(ctx, new).id)
        with ctx.sessions.begin() as session:  # two retrying later, one retrying now
            for rid, delay_s in ((ids[1], 900), (ids[4], 300), (ids[7], -5)):
                session.execute(
                    update(DistributionRequest)
                    .where(DistributionRequest.id == rid)
                    .values(
                        state=State.RETRYING, next_attempt_at=utcnow() + timedelta(seconds=delay_s)
                    )
                )
        with ctx.sessions() as session:
            whole = views.lane(ctx, session, USER).as_dict()
            head = overview.lane_head(ctx, session, USER, 11).as_dict()
            page = overview.overview(ctx, session, user=USER, hours=1)
        assert _places(head) == _places(whole)[:11] and len(whole["items"]) == 12
        assert _same_etas(head, whole)
        assert head["items"][-1]["id"] == ids[4]  # retrying later: after every ready one
        (lane,) = page["lanes"]
        assert lane["waiting"] == 12 and _places(lane) == _places(whole) and _same_etas(lane, whole)
        assert page["held"] == [] and page["recent"] == [] and page["timeline"]["calls"] == []
    finally:
        close(ctx)


def _places(lane: dict[str, Any]) -> list[tuple[str, int]]:
    return [(i["id"], i["position"]) for i in lane["items"]]


def _same_etas(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """ETAs alike to within the time between the two reads (an idle lane's slot is now)."""
    return all(
        abs(
            (
                datetime.fromisoformat(a["estimatedDispatchAt"])
                - datetime.fromisoformat(b["estimatedDispatchAt"])
            ).total_seconds()
        )
        < 2
        for a, b in zip(one["items"], other["items"], strict=False)
    )
