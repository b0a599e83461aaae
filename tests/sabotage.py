# ruff: noqa: E501  (a table of exact source edits reads best one per line)
"""Remove one fault-handling mechanism at a time and check that its system test then fails.

    .venv/bin/python -m tests.sabotage            # every case (about 10 minutes)
    .venv/bin/python -m tests.sabotage postgres   # the cases whose name contains "postgres"
    SPDIST_SABOTAGE_KEEP=1 ...                    # keep each copy and its process logs

Each case copies the working tree to a temporary folder, edits the copy (each edit must
match exactly once, so a case cannot silently stop applying), runs the scenario's test
there, and expects it to FAIL. Nobody else ever runs the broken code. The table it prints
is the one in docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "tests/system"


@dataclass(frozen=True)
class Case:
    name: str
    removed: str
    test: str
    edits: tuple[tuple[str, str, str], ...]  # (file, old, new)


_NO_FENCE = (
    "worker/ledger/statements.py",
    '_FENCE_OPEN = F.not_before_us <= bindparam("slot_us", type_=F.not_before_us.type)\n',
    "_FENCE_OPEN = F.not_before_us == F.not_before_us\n",
)
_NO_SEND_TIME = (
    "worker/dispatch.py",
    "    return answer, fired.now_us + max(0, int((left_mono - fired.before_mono) * US))\n",
    "    return answer, fired.now_us\n",
)
_NO_PREPARE = ("worker/dispatch.py", "    _prepare(ctx)\n    fired = _fire", "    fired = _fire")

CASES: tuple[Case, ...] = (
    Case(
        "lease expiry of a claim that moved on",
        "the reconciler's attempt fence on an expired lease",
        "tests/integration/test_leases.py::test_a_claim_that_moved_on_since_the_read_is_left_alone",
        (
            (
                "worker/reconcile.py",
                "            only_if=(DistributionRequest.attempt_count == req.attempt_count,),\n",
                "",
            ),
        ),
    ),
    Case(
        "kill -9 pool child",
        "reconciler `expire_leases`",
        f"{SYSTEM}/test_processes.py::test_kill9_pool_child_mid_call",
        (
            (
                "worker/reconcile.py",
                'counts["leases_expired"] = expire_leases(ctx, now)',
                'counts["leases_expired"] = 0',
            ),
        ),
    ),
    Case(
        "kill -9 worker main",
        "reconciler `wake_lanes`",
        f"{SYSTEM}/test_processes.py::test_kill9_worker_main_process_mid_call",
        (
            (
                "worker/reconcile.py",
                'counts["lanes_woken"] = wake_lanes(ctx)',
                'counts["lanes_woken"] = 0',
            ),
        ),
    ),
    Case(
        "SIGTERM with tasks in flight",
        "warm shutdown (SIGTERM made a cold shutdown: `REMAP_SIGTERM=SIGQUIT`)",
        f"{SYSTEM}/test_processes.py::test_sigterm_with_tasks_in_flight",
        (
            (
                "tests/system/conftest.py",
                '"PYTHONPATH": path,\n',
                '"PYTHONPATH": path, "REMAP_SIGTERM": "SIGQUIT",\n',
            ),
        ),
    ),
    Case(
        "Redis FLUSHALL",
        "the SQL floor (0 instead, from `load` and from `_restore_lane`) and the claim's fence",
        f"{SYSTEM}/test_redis.py::test_redis_flushall_mid_run",
        (
            ("worker/dispatch.py", "    return floor\n", "    return 0\n"),
            (
                "worker/dispatch.py",
                "    floor = loaded.floor_us if loaded.alone else None\n",
                "    floor = 0 if loaded.alone else None\n",
            ),
            _NO_FENCE,
        ),
    ),
    Case(
        "Redis restored older",
        "the claim's SQL fence (it lets every slot through)",
        f"{SYSTEM}/test_pacing.py::test_redis_restored_to_an_older_copy_mid_run",
        (_NO_FENCE,),
    ),
    Case(
        "SIGSTOP between slot and send",
        "the send-time correction (next slot counted from the fire)",
        f"{SYSTEM}/test_pacing.py::test_pool_child_stopped_between_slot_and_send",
        (_NO_SEND_TIME,),
    ),
    Case(
        "TLS front, slow set-up",
        "connection opened in the lead and the send-time correction",
        f"{SYSTEM}/test_pacing.py::test_tls_front_with_slow_varying_connection_setup",
        (_NO_PREPARE, _NO_SEND_TIME),
    ),
    Case(
        "connection opened in the lead",
        "`_prepare` in the dispatch",
        "tests/integration/test_connections.py::test_dispatch_opens_the_connection_before_the_slot",
        (_NO_PREPARE,),
    ),
    Case(
        "send deadline",
        "the deadline check on the request's writes",
        "tests/integration/test_connections.py::test_nothing_is_sent_past_the_send_deadline",
        (
            (
                "worker/transport.py",
                "        if deadline is not None and time.monotonic() > deadline:\n",
                "        if False:\n",
            ),
        ),
    ),
    Case(
        "Redis stopped and restarted empty",
        "the reconciler's refill of lanes Redis lost (`_refill`)",
        f"{SYSTEM}/test_redis.py::test_redis_down_10s_and_back_empty",
        (
            (
                "worker/reconcile.py",
                "    if not user_ids:\n        return\n",
                "    if True:\n        return\n",
            ),
        ),
    ),
    Case(
        "outbox",
        "reconciler `publish_outbox`",
        f"{SYSTEM}/test_redis.py::test_outbox_publishes_what_was_accepted_without_redis",
        (
            (
                "worker/reconcile.py",
                'counts["published"] = publish_outbox(ctx)',
                'counts["published"] = 0',
            ),
        ),
    ),
    Case(
        "Postgres unreachable",
        "no call without a committed claim (a failed claim calls anyway)",
        f"{SYSTEM}/test_postgres.py::test_postgres_unreachable_10s",
        (
            (
                "worker/dispatch.py",
                "    except SQLAlchemyError:\n        _release(ctx, req, ticket)\n        raise\n",
                "    except SQLAlchemyError:\n        claimed = req.attempt_count + 1\n",
            ),
        ),
    ),
    Case(
        "same message twice",
        "`_dispatchable` state check + claim fencing",
        f"{SYSTEM}/test_messages.py::test_same_message_published_twice",
        (
            (
                "worker/dispatch.py",
                "    if req.state == State.QUEUED:\n        return True\n",
                "    if True:\n        return True\n",
            ),
            (
                "worker/ledger/statements.py",
                '        waiting(R.state),\n        R.attempt_count == bindparam("was"),\n'
                "    )\n    .values(\n        state=State.DISPATCHING,",
                "    )\n    .values(\n        state=State.DISPATCHING,",
            ),
        ),
    ),
    Case(
        "unknown/deleted request",
        "`_drop_ghost` (lane entry of a deleted request)",
        f"{SYSTEM}/test_messages.py::test_message_for_unknown_or_deleted_request",
        (
            (
                "worker/dispatch.py",
                "    ghosts = [m for m in ctx.pacer.members(user_id) if parse_member(m)[1] == request_id]\n",
                "    ghosts: list[str] = []\n",
            ),
        ),
    ),
    Case(
        "malformed message",
        "argument check in `spdist.dispatch`",
        f"{SYSTEM}/test_messages.py::test_malformed_messages",
        (
            (
                "worker/tasks.py",
                "    if not isinstance(request_id, str) or not isinstance(due_us, int | None):\n",
                "    if False:\n",
            ),
        ),
    ),
    Case(
        "Streampixel faults (all 5)",
        "retry policy (every error ends the request as `failed`)",
        f"{SYSTEM}/test_streampixel.py",
        (
            (
                "worker/outcomes.py",
                "        return Plan(**base, request_values=_to(State.SUCCEEDED, result.message))\n",
                "        return Plan(**base, request_values=_to(State.SUCCEEDED, result.message))\n"
                "    return Plan(**base, request_values=_to(State.FAILED, result.message))\n",
            ),
        ),
    ),
    Case(
        "worker clocks ±5 min",
        "lease on the Redis clock (written on the worker's clock)",
        f"{SYSTEM}/test_processes.py::test_worker_clocks_five_minutes_ahead_and_behind",
        (
            (
                "worker/dispatch.py",
                "    lease = from_us(slot_us) + timedelta(seconds=ctx.lease_s)\n",
                "    lease = utcnow() + timedelta(seconds=ctx.lease_s)\n",
            ),
        ),
    ),
    Case(
        "Sentinel failover",
        "the pacer follows the master (pinned to the master the Sentinels named at start)",
        f"{SYSTEM}/test_sentinel.py::test_sentinel_failover_mid_run",
        (
            (
                "worker/redis_url.py",
                "    return sentinel.master_for(name, SentinelMaster, **_master_kwargs(target, options))\n",
                "    host, port = sentinel.discover_master(name)\n"
                "    return redis.Redis(host=host, port=port, **_master_kwargs(target, options))\n",
            ),
        ),
    ),
    Case(
        "Sentinel failover: broker",
        "the database and password on every address of the broker URL",
        "tests/integration/test_sentinel.py::test_the_broker_follows_the_master",
        (
            (
                "worker/celery_app.py",
                '"broker_url": broker_url(s.redis_url),',
                '"broker_url": s.redis_url,',
            ),
        ),
    ),
    Case(
        "console CSRF",
        "the console's double-submit and Origin check (`_need_csrf`)",
        "tests/integration/test_console.py::test_console_counts_down_and_cancels",
        (
            (
                "api/routes/ui.py",
                "    if not (_same_origin(request) and cookie and hmac.compare_digest(cookie, header)):\n",
                "    if False:\n",
            ),
        ),
    ),
    Case(
        "Flower: failed call shown as SUCCESS",
        "the dispatch's report to Flower (`reports.report`)",
        "tests/integration/test_flower.py::test_flower_shows_failed_calls_readably_and_no_reconciler_ticks",
        (
            (
                "worker/tasks.py",
                "    return reports.report(get_context(), request_id, word)  # raises for Flower: no new message\n",
                "    return word\n",
            ),
        ),
    ),
    Case(
        "Flower: reconciler ticks",
        "no task events for `spdist.reconcile`",
        "tests/integration/test_flower.py::test_flower_shows_failed_calls_readably_and_no_reconciler_ticks",
        (("worker/tasks.py", "acks_late=False, send_events=False)", "acks_late=False)"),),
    ),
    Case(
        "offline /docs",
        "Swagger UI from local assets (FastAPI's CDN page instead)",
        "tests/integration/test_console.py::test_console_counts_down_and_cancels",
        (
            (
                "api/main.py",
                "        docs_url=None,  # served by api/docs.py from local assets\n",
                "",
            ),
        ),
    ),
    Case(
        "scheduler heartbeat",
        "the reconcile pass's heartbeat (`_heartbeat`), which the scheduler alert reads",
        "tests/integration/test_prometheus.py::test_prometheus_scrapes_the_api",
        (
            (
                "worker/tasks.py",
                "    counts = reconcile_mod.reconcile(ctx)\n    _heartbeat(ctx)\n",
                "    counts = reconcile_mod.reconcile(ctx)\n",
            ),
        ),
    ),
    Case(
        "unmigrated database",
        "the one-line `spdist migrate` hint (the SQL error instead)",
        "tests/integration/test_firstrun.py::test_unmigrated_database_says_run_migrate",
        (("worker/cli.py", "    if unmigrated(exc):\n        return UNMIGRATED\n", ""),),
    ),
    Case(
        "taken port",
        "the port check before the stack starts (`ports_free`)",
        "tests/integration/test_firstrun.py::test_taken_port_is_reported_before_the_banner",
        (
            (
                "worker/dev/stack.py",
                "    if not ports_free(stack, api_port, flower_port):\n        return 1\n",
                "",
            ),
        ),
    ),
)

# Issue 12: webhooks, callers, back-pressure and the edge (unit and integration tests).
UNIT, INTEG = "tests/unit", "tests/integration"
CASES += (
    Case(
        "webhook during the call",
        "waiting for the call in flight (`_in_flight`)",
        f"{UNIT}/test_webhook_timing.py::test_distributing_during_the_call_confirms_it",
        (
            (
                "worker/webhooks.py",
                "    if ev.event in ACTIONS and ev.upload_id and _in_flight(ctx, ev):\n",
                "    if False:\n",
            ),
        ),
    ),
    Case(
        "webhook after the outcome",
        "the dispatch's `after_outcome` call",
        f"{UNIT}/test_webhook_timing.py::test_distributing_during_the_call_confirms_it",
        (
            (
                "worker/dispatch.py",
                "        webhooks.after_outcome(ctx, req.upload_id)\n",
                "        pass\n",
            ),
        ),
    ),
    Case(
        "each distribution confirmed",
        "dedupe on the payload (back to (uploadId, event))",
        f"{INTEG}/test_webhook_events.py::test_each_distribution_gets_its_own_confirmation",
        (
            (
                "worker/webhooks.py",
                "        dedupe_key=payload_digest(payload),\n",
                '        dedupe_key=f"{upload_id}:{event}" if upload_id else None,\n',
            ),
        ),
    ),
    Case(
        "rejected during a 200",
        "failing the request that was in flight",
        f"{UNIT}/test_webhook_timing.py::test_rejected_during_a_triggered_call_ends_it_failed",
        (
            (
                "worker/webhooks.py",
                "DistributionRequest.state.in_(PENDING) | in_flight",
                "DistributionRequest.state.in_(PENDING)",
            ),
        ),
    ),
    Case(
        "idempotency key per caller",
        "`created_by` in the key lookup",
        f"{UNIT}/test_edge_cases.py::test_idempotency_key_belongs_to_its_caller",
        (
            (
                "worker/distributions.py",
                "            DistributionRequest.created_by == created_by,\n",
                "",
            ),
        ),
    ),
    Case(
        "auto-distribution's keys",
        "spdist's own caller name for auto-distribution",
        f"{INTEG}/test_webhook_events.py::test_no_caller_can_take_auto_distributions_key",
        (
            (
                "worker/webhooks.py",
                "created_by=callers.AUTO, hold=hold,",
                'created_by="ci", hold=hold,',
            ),
        ),
    ),
    Case(
        "cancel/retry permission",
        "`may_act` (anyone may act)",
        f"{UNIT}/test_edge_cases.py::test_only_the_creator_or_an_operator_may_act",
        (
            (
                "worker/callers.py",
                "    return caller is None or caller == created_by or caller in set(operators)\n",
                "    return True\n",
            ),
        ),
    ),
    Case(
        "back-pressure",
        "the waiting cap",
        f"{UNIT}/test_edge_cases.py::test_back_pressure_past_the_cap",
        (
            (
                "worker/backpressure.py",
                "    if waiting < ctx.settings.max_waiting_per_user:\n",
                "    if True:\n",
            ),
        ),
    ),
    Case(
        "auth before the body",
        "the `AuthFirst` middleware",
        f"{UNIT}/test_edge_cases.py::test_auth_comes_before_the_body",
        (("api/main.py", "    app.add_middleware(AuthFirst)", "    pass"),),
    ),
    Case(
        "one validator",
        "the strict boolean (back to `bool(value)`)",
        f"{UNIT}/test_edge_cases.py::test_one_verdict_for_the_api_the_task_and_the_cli",
        (("worker/validation.py", "    if not isinstance(value, bool):\n", "    if False:\n"),),
    ),
    Case(
        "zone-less cursor",
        "the cursor's zone and id check",
        f"{INTEG}/test_no_5xx.py",
        (
            (
                "worker/views.py",
                "        if at.tzinfo is None or not REQUEST_ID.fullmatch(request_id):\n",
                "        if False:\n",
            ),
        ),
    ),
    Case(
        "NUL in a webhook field",
        "the webhook payload's text check",
        f"{INTEG}/test_no_5xx.py",
        (("api/routes/webhooks.py", "    if bad is not None:\n", "    if False:\n"),),
    ),
    Case(
        "request after a rejection",
        "the dispatch's check for a rejected build (the call is made)",
        f"{UNIT}/test_webhook_timing.py::test_a_request_after_the_rejection_makes_no_call",
        (("worker/dispatch.py", "    if loaded.rejected:\n", "    if False:\n"),),
    ),
    Case(
        "NUL in a request id",
        "the request id check before SQL",
        f"{INTEG}/test_no_5xx.py",
        (("worker/distributions.py", "    validation.request_id(request_id)\n", ""),),
    ),
    Case(
        "retention: old waiting and in-flight requests",
        "prune's terminal-state condition",
        "tests/integration/test_history.py::test_prune_keeps_what_is_still_needed",
        (("worker/retention.py", "        R.state.in_([s.value for s in TERMINAL]),\n", ""),),
    ),
    Case(
        "retention: the pacing floor",
        "prune's keeping of each user's newest attempt",
        "tests/integration/test_history.py::test_prune_keeps_what_is_still_needed",
        (("worker/retention.py", "        ~holds_floor(),\n", ""),),
    ),
    Case(
        "held request placed in a lane",
        "enqueue's `held` branch (stored queued, published)",
        f"{INTEG}/test_holds.py::test_held_request_is_in_no_lane_until_released",
        (
            (
                "worker/distributions.py",
                "    if new.hold:  # no lane, no Redis",
                "    if False:  # no lane, no Redis",
            ),
        ),
    ),
    Case(
        "held request dispatchable",
        "`held` kept out of WAITING (the reconciler refills, a dispatch claims)",
        f"{INTEG}/test_holds.py::test_held_request_is_in_no_lane_until_released",
        (
            (
                "worker/models.py",
                "WAITING = (State.QUEUED, State.RETRYING)\n",
                "WAITING = (State.HELD, State.QUEUED, State.RETRYING)\n",
            ),
        ),
    ),
    Case(
        "held counted by back-pressure",
        "`held` in the waiting count (only queued and retrying)",
        f"{INTEG}/test_holds.py::test_held_requests_count_against_the_cap",
        (("worker/ledger/statements.py", "for s in PENDING]", "for s in PENDING[1:]]"),),
    ),
    Case(
        "supersede of held",
        "the newer held request's supersede of the older one",
        f"{INTEG}/test_holds.py::test_cancel_and_supersede_a_held_request",
        (
            (
                "worker/holds.py",
                "        if coalesce:\n            _supersede_held(conn, values)\n",
                "",
            ),
        ),
    ),
    Case(
        "rollback's choice of upload",
        "`choose` skipping the latest upload (it rolls back to itself)",
        f"{INTEG}/test_rollback.py::test_rollback_picks_the_previous_distributed_upload_and_goes_first",
        (
            (
                "worker/rollback.py",
                "        query = query.where(R.upload_id != latest.upload_id)\n",
                "        query = query.where(R.upload_id == R.upload_id)\n",
            ),
        ),
    ),
    Case(
        "lane series: ready",
        "`spdist_lane_ready` counting only requests not retrying later",
        f"{INTEG}/test_metrics_lanes.py::test_lane_series_agree_with_the_slow_way",
        (
            (
                "api/metrics_lanes.py",
                'func.count().filter(ready).label("ready")',
                'func.count().label("ready")',
            ),
        ),
    ),
    Case(
        "lane series: 15-minute window",
        "`spdist_lane_calls_15m` keeping to the window",
        f"{INTEG}/test_metrics_lanes.py::test_lane_series_agree_with_the_slow_way",
        (("api/metrics_lanes.py", "            A.started_at >= since,\n", ""),),
    ),
    Case(
        "lane series: newest call",
        "`spdist_lane_stalled_seconds` counting from the lane's newest call",
        f"{INTEG}/test_metrics_lanes.py::test_lane_series_agree_with_the_slow_way",
        (
            (
                "api/metrics_lanes.py",
                ".order_by(A.lane_free_us.desc())",
                ".order_by(A.lane_free_us)",
            ),
        ),
    ),
    Case(
        "lane series: label escaping",
        "the escaping of label values in the lane text",
        f"{UNIT}/test_metrics_text.py",
        (
            (
                "api/metrics_lanes.py",
                """    return value.replace("\\\\", r"\\\\").replace("\\n", r"\\n").replace('"', r"\\"")\n""",
                "    return value\n",
            ),
        ),
    ),
    Case(
        "lane series: HELP lines",
        "the HELP line of each lane family",
        f"{UNIT}/test_metrics_text.py",
        (
            (
                "api/metrics_lanes.py",
                'out.append(f"# HELP {f.name} {_help(f.doc)}\\n# TYPE',
                'out.append(f"# TYPE',
            ),
        ),
    ),
    Case(
        "scrapes at once",
        "one shared reading at a time (each scrape reads in a thread of its own)",
        f"{UNIT}/test_api.py::test_scrapes_at_once_share_one_reading_at_a_time",
        (
            (
                "api/routes/health.py",
                "    body = await _READINGS.get(id(ctx), partial(_exposition, ctx))\n",
                "    from starlette.concurrency import run_in_threadpool\n\n"
                "    body = await run_in_threadpool(partial(_exposition, ctx))\n",
            ),
        ),
    ),
    Case(
        "scrapes share a newer reading",
        "a scrape waits for a reading begun after it came (an older one would do)",
        f"{UNIT}/test_shared_reading.py::test_callers_during_a_reading_share_the_next_one_and_none_gets_an_older_one",
        (
            (
                "api/shared_reading.py",
                "                pending = self._next.pop(slot)\n",
                "                pending = self._next[slot]\n",
            ),
            (
                "api/shared_reading.py",
                "                    pending.future.set_result(await run_in_threadpool(read))\n",
                "                    pending.future.set_result(await run_in_threadpool(read))\n"
                "                    del self._next[slot]\n",
            ),
        ),
    ),
    Case(
        "scrapes rest between readings",
        "the rest after a reading while scrapes overlap",
        f"{UNIT}/test_shared_reading.py::test_after_overlapping_calls_the_next_reading_waits_its_rest",
        (
            (
                "api/shared_reading.py",
                "                    await asyncio.sleep(wait)  # callers meanwhile join this reading\n",
                "                    pass\n",
            ),
        ),
    ),
    Case(
        "scrapes: a lone scraper",
        "no rest when calls do not overlap (every reading followed by one)",
        f"{UNIT}/test_shared_reading.py::test_one_caller_at_a_time_never_waits_for_a_rest",
        (
            (
                "api/shared_reading.py",
                "                if pending.callers > 1 or slot in self._next:  # calls overlap: rest\n",
                "                if True:\n",
            ),
        ),
    ),
    Case(
        "pacer answers checked",
        "a pacer answer of unknown kind taken as it comes",
        f"{UNIT}/test_pacer.py::test_an_answer_of_unknown_kind_is_no_slot",
        (("worker/pacer/lanes.py", "    if kind not in KINDS:\n", "    if False:\n"),),
    ),
    Case(
        "callback outbox in the transaction",
        "the trigger writing an event's first try with the change of state",
        f"{INTEG}/test_callbacks.py::test_fails_twice_then_delivered_in_order",
        (
            (
                "migrations/versions/0007_callbacks.py",
                '"UPDATE": f"NEW.callback_url IS NOT NULL AND',
                '"UPDATE": f"NEW.callback_url IS NULL AND',
            ),
        ),
    ),
    Case(
        "callback host allow-list",
        "the check of the URL's host against SPDIST_CALLBACK_HOSTS",
        f"{INTEG}/test_callbacks.py::test_disallowed_callback_is_422_and_stores_nothing",
        (
            (
                "worker/callbacks.py",
                "    if not host_allowed(",
                "    if False and not host_allowed(",
            ),
        ),
    ),
    Case(
        "callback order per request",
        "a try due only when the request's earlier events are finished",
        f"{INTEG}/test_callbacks.py::test_fails_twice_then_delivered_in_order",
        (
            (
                "worker/deliverer.py",
                "            earlier.finished_at.is_(None),\n",
                "            earlier.finished_at.is_(None),\n            earlier.id < 0,\n",
            ),
        ),
    ),
    Case(
        "callback lease at the claim",
        "a claimed try left alone until its lease runs out",
        f"{INTEG}/test_callbacks.py::test_lease_keeps_a_claimed_try_from_a_second_deliverer",
        (
            (
                "worker/deliverer.py",
                "        C.due_at <= now,\n        (C.claimed_until.is_(None)) | (C.claimed_until < now),\n",
                "        C.due_at <= now,\n",
            ),
        ),
    ),
    Case(
        "callback lease at the finish",
        "only the claim still holding the lease records the try",
        f"{INTEG}/test_callbacks.py::test_lease_keeps_a_claimed_try_from_a_second_deliverer",
        (
            (
                "worker/deliverer.py",
                "C.id == claimed.id, C.claimed_until == claimed.lease, C.finished_at.is_(None)",
                "C.id == claimed.id, C.finished_at.is_(None)",
            ),
        ),
    ),
    Case(
        "callback signature bytes",
        "the HMAC over the exact bytes sent",
        f"{INTEG}/test_callbacks.py::test_signature_checked_by_openssl",
        (
            (
                "worker/deliverer.py",
                "callbacks.signature(secret.get_secret_value(), body)",
                'callbacks.signature(secret.get_secret_value(), body.replace(b",", b", "))',
            ),
        ),
    ),
    Case(
        "callback backoff",
        "the next try written after the backoff, not at once",
        f"{INTEG}/test_callbacks.py::test_receiver_that_never_answers_is_retried_spaced",
        (
            (
                "worker/deliverer.py",
                "                    created_at=now,\n                    due_at=following,\n",
                "                    created_at=now,\n                    due_at=now,\n",
            ),
        ),
    ),
)


def copy_tree(dest: Path) -> None:
    """The working tree as it is now (tracked and new files, not ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def apply(dest: Path, edits: tuple[tuple[str, str, str], ...]) -> None:
    for rel, old, new in edits:
        path = dest / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{rel}: the edit no longer matches exactly once: {old!r}")
        path.write_text(text.replace(old, new))


def run(case: Case) -> tuple[bool, str]:
    """(failed as it should, why)."""
    dest = Path(tempfile.mkdtemp(prefix="spdist-sabotage-"))
    try:
        copy_tree(dest)
        apply(dest, case.edits)
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={dest / 'tmp'}",
            case.test,
        ]
        done = subprocess.run(argv, cwd=dest, capture_output=True, text=True)
    finally:
        if os.environ.get("SPDIST_SABOTAGE_KEEP"):
            print(f"kept {dest} (process logs under tmp/)", file=sys.stderr)
        else:
            shutil.rmtree(dest, ignore_errors=True)
    out = done.stdout + done.stderr
    summary = (re.findall(r"^(\d+ (?:failed|passed).*) in [\d.]+s", out, re.M) or [out[-200:]])[-1]
    reasons = re.findall(r"^E\s+(\w+Error: .*)$", out, re.M)
    why = f"{summary}; {reasons[0][:160]}" if reasons else summary
    return done.returncode == 1, why


def main(argv: list[str]) -> int:
    chosen = [c for c in CASES if not argv or any(a.lower() in c.name.lower() for a in argv)]
    rows, ok = [], True
    for case in chosen:
        failed, why = run(case)
        ok &= failed
        verdict = "**fails**" if failed else "STILL PASSES"
        rows.append(f"| {case.name} | {case.removed} | {verdict}: {why} |")
        print(rows[-1], flush=True)
    print("\n| scenario | mechanism removed | result |\n|---|---|---|")
    print("\n".join(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
