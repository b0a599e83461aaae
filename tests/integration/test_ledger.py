"""The dispatch's SQL on both databases: on PostgreSQL claim, record, unclaim and enqueue are
single statements on an autocommit connection; their effects must match SQLite's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, select

from worker import ledger
from worker.db import make_engine
from worker.ledger import ATTEMPTS, REQUESTS
from worker.ledger.postgres import supersede_and_insert_params
from worker.ledger.statements import SUPERSEDE_AND_INSERT_DIRECT
from worker.models import State, new_id, utcnow

USER = "1" * 24


def _connection(db_url: str) -> tuple[object, Connection]:
    engine = make_engine(db_url)
    conn = engine.connect()
    if conn.dialect.name == "postgresql":  # as the dispatch's own pool (Context.autocommit)
        conn.execution_options(isolation_level="AUTOCOMMIT")
    return engine, conn


def _led(conn: Connection) -> ledger.Ledger:
    """The adapter the context would choose for this connection's database."""
    return ledger.for_engine(conn.engine)


def _values(project: str, *, coalesce: bool = True) -> dict[str, object]:
    now = utcnow()
    return {
        "id": new_id(),
        "user_id": USER,
        "project_id": project,
        "upload_id": "c" * 24,
        "priority": 0,
        "coalesce": coalesce,
        "seq": int(now.timestamp() * 1e6 // 1),
        "state": State.QUEUED,
        "created_at": now,
        "updated_at": now,
        "attempt_count": 0,
        "failures": 0,
        "idempotency_key": None,
        "request_hash": None,
        "created_by": "spdist:cli",
    }


def _insert(conn: Connection, project: str, *, coalesce: bool = True) -> tuple[str, Any]:
    values = _values(project, coalesce=coalesce)
    old = _led(conn).insert(conn, values, coalesce=coalesce)
    conn.commit()
    return str(values["id"]), old


def test_claim_unclaim_record_are_fenced(db_url: str) -> None:
    engine, conn = _connection(db_url)
    try:
        rid, _ = _insert(conn, "a" * 24)
        loaded = _led(conn).load(conn, rid)
        assert loaded is not None and loaded.alone and loaded.floor_us == 0
        snap = loaded.request
        lease = utcnow() + timedelta(seconds=60)
        attempt = {"slot_us": 1, "lane_free_us": 7, "worker": "w"}
        number = _led(conn).claim(conn, snap, utcnow(), lease, attempt)
        assert number == 1
        # Already claimed: the fence (7) stands after this slot too, so it says so.
        assert _led(conn).claim(conn, snap, utcnow(), lease, attempt) == ledger.Fenced(7)
        assert _led(conn).claim(conn, snap, utcnow(), lease, {**attempt, "slot_us": 7}) is None
        _led(conn).unclaim(conn, snap, number, 7)
        assert _fence(conn) == 0  # no call was made: the fence is given back
        back = _led(conn).load(conn, rid)
        assert back is not None and back.request.state == State.QUEUED
        assert back.request.attempt_count == 0
        assert conn.execute(select(ATTEMPTS.c.id)).all() == []

        number = _led(conn).claim(conn, snap, utcnow(), lease, attempt)
        assert number == 1
        moved = {"state": State.SUCCEEDED, "last_message": "ok", "next_attempt_at": None}
        done = {"http_status": 200, "outcome": "triggered", "message": "ok", "lane_free_us": 9}
        assert not _led(conn).record(conn, snap, number + 1, utcnow(), moved, done, 7)
        assert _led(conn).record(conn, snap, number, utcnow(), moved, done, 7)
        assert not _led(conn).record(conn, snap, number, utcnow(), moved, done, 7)  # fenced
        assert _fence(conn) == 9  # the actual send plus the gap
        row = conn.execute(select(ATTEMPTS.c.outcome, ATTEMPTS.c.lane_free_us)).one()
        assert tuple(row) == ("triggered", 9)
        state = conn.execute(select(REQUESTS.c.state, REQUESTS.c.lease_expires_at)).one()
        assert tuple(state) == (State.SUCCEEDED, None)
        loaded = _led(conn).load(conn, rid)
        assert loaded is not None and loaded.floor_us == 9
    finally:
        conn.close()
        engine.dispose()  # type: ignore[attr-defined]


def _fence(conn: Connection) -> int | None:
    value = conn.execute(ledger.FLOOR, {"uid": USER}).scalar()
    conn.commit()
    return None if value is None else int(value)


def _claim(conn: Connection, rid: str, slot_us: int, free_us: int) -> object:
    loaded = _led(conn).load(conn, rid)
    assert loaded is not None
    attempt = {"slot_us": slot_us, "lane_free_us": free_us, "worker": "w"}
    lease = utcnow() + timedelta(minutes=1)
    return _led(conn).claim(conn, loaded.request, utcnow(), lease, attempt)


def test_fence_refuses_a_slot_before_the_last_call_allows(db_url: str) -> None:
    """Redis may grant a slot from state older than the truth: the claim refuses it, in its
    own statement, and says where the fence stands; the request stays waiting."""
    engine, conn = _connection(db_url)
    try:
        first, _ = _insert(conn, "a" * 24)
        second, _ = _insert(conn, "b" * 24)
        assert _claim(conn, first, 1_000, 5_000) == 1
        assert _fence(conn) == 5_000
        assert _claim(conn, second, 4_999, 9_000) == ledger.Fenced(5_000)
        loaded = _led(conn).load(conn, second)
        assert loaded is not None and loaded.request.state == State.QUEUED
        assert loaded.request.attempt_count == 0 and loaded.floor_us == 5_000
        assert _fence(conn) == 5_000  # a refused claim moves nothing
        assert _claim(conn, second, 5_000, 9_000) == 1
        assert _fence(conn) == 9_000
        # A record for the first call, late, does not pull back the second one's fence.
        snap = _led(conn).load(conn, first)
        assert snap is not None
        done = {"http_status": 200, "outcome": "triggered", "message": "ok", "lane_free_us": 4_000}
        moved = {"state": State.SUCCEEDED, "last_message": "ok", "next_attempt_at": None}
        assert _led(conn).record(conn, snap.request, 1, utcnow(), moved, done, 5_000)
        assert _fence(conn) == 9_000
    finally:
        conn.close()
        engine.dispose()  # type: ignore[attr-defined]


def test_fence_serializes_concurrent_claims_of_one_user(pg_url: str) -> None:
    """Two workers granted the same user's slot at once (Redis lost the reservation): the
    fence row's lock lets exactly one claim through."""
    import threading

    engines = [_connection(pg_url) for _ in range(2)]
    try:
        ids = [_insert(engines[0][1], f"{n:024x}")[0] for n in range(2)]
        results: list[object] = []
        barrier = threading.Barrier(2)

        def run(i: int) -> None:
            barrier.wait()
            results.append(_claim(engines[i][1], ids[i], 1_000, 5_000 + i))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results.count(1) == 1
        loser = next(r for r in results if r != 1)
        assert loser is None or isinstance(loser, ledger.Fenced)
        attempts = engines[0][1].execute(select(ATTEMPTS.c.id)).all()
        assert len(attempts) == 1
    finally:
        for engine, conn in engines:
            conn.close()
            engine.dispose()  # type: ignore[attr-defined]


def test_enqueue_supersedes_the_queued_request_of_the_project(db_url: str) -> None:
    engine, conn = _connection(db_url)
    try:
        first, old = _insert(conn, "a" * 24)
        assert old is None
        second, old = _insert(conn, "a" * 24)
        assert old is not None and old.id == first
        rows = dict(conn.execute(select(REQUESTS.c.id, REQUESTS.c.state)).all())
        assert rows == {first: State.SUPERSEDED, second: State.QUEUED}
        seqs = conn.execute(select(REQUESTS.c.seq).distinct()).all()
        assert len(seqs) == 1  # the new request took the old one's place
        loaded = _led(conn).load(conn, second)
        assert loaded is not None and loaded.alone
        other, _ = _insert(conn, "b" * 24)
        loaded = _led(conn).load(conn, other)
        assert loaded is not None and not loaded.alone
    finally:
        conn.close()
        engine.dispose()  # type: ignore[attr-defined]


def test_supersede_probes_the_project_not_the_lane(pg_url: str) -> None:
    """Enqueue's "oldest queued request of this project" must not walk the user's lane: with
    400 queued requests of one user it is one probe of ix_requests_project_lane."""
    engine, conn = _connection(pg_url)
    try:
        for n in range(400):
            _insert(conn, f"{n:024x}")
        conn.exec_driver_sql("ANALYZE distribution_requests")
        st = SUPERSEDE_AND_INSERT_DIRECT
        assert st.prepare is False  # planned from its values every time
        values = st.values(supersede_and_insert_params(_values("f" * 24)))
        dbapi = conn.connection.driver_connection
        plan = "\n".join(r[0] for r in dbapi.execute("EXPLAIN " + st.sql, values))  # type: ignore[union-attr]
        assert "ix_requests_project_lane" in plan, plan
    finally:
        conn.close()
        engine.dispose()  # type: ignore[attr-defined]


def test_transition_moves_only_from_the_named_states_and_meets_its_guard(db_url: str) -> None:
    engine, conn = _connection(db_url)
    try:
        rid, _ = _insert(conn, "d" * 24)
        led = _led(conn)
        assert not led.transition(conn, rid, State.FAILED, State.QUEUED)
        assert not led.transition(
            conn, rid, State.QUEUED, State.CANCELLED, only_if=(REQUESTS.c.attempt_count == 1,)
        )
        assert led.transition(
            conn,
            rid,
            (State.FAILED, State.QUEUED),
            State.CANCELLED,
            only_if=(REQUESTS.c.attempt_count == 0,),
            last_message="by test",
        )
        conn.commit()
        row = conn.execute(
            select(REQUESTS.c.state, REQUESTS.c.last_message).where(REQUESTS.c.id == rid)
        ).one()
        assert tuple(row) == (State.CANCELLED, "by test")
    finally:
        conn.close()
        engine.dispose()  # type: ignore[attr-defined]
