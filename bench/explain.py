"""EXPLAIN (ANALYZE) of the hot paths' reads on a PostgreSQL database, with their times.

    python -m bench.explain postgresql+psycopg://postgres@127.0.0.1:5432/DB [--plans]

Run on a database holding a big history (scenario 6 builds one; `--build N` here builds N
requests into an empty database first): every line should read an index and take well
under a millisecond, whatever N is.
"""

from __future__ import annotations

import argparse
import re

from sqlalchemy import text

from bench import history_seed
from worker.db import make_engine

USER = f"{history_seed.HISTORY_USER_BASE:024x}"
PROJECT = f"{0xC7000000:024x}"
NEWEST = "ORDER BY created_at DESC, id DESC LIMIT 51"
WAITING = "state IN ('queued', 'retrying')"
QUERIES = {
    "list, no filter": f"SELECT * FROM distribution_requests {NEWEST}",
    "list by userId": f"SELECT * FROM distribution_requests WHERE user_id = '{USER}' {NEWEST}",
    "list by projectId": f"SELECT * FROM distribution_requests WHERE project_id = '{PROJECT}' "
    f"{NEWEST}",
    "list by state=queued": f"SELECT * FROM distribution_requests WHERE state = 'queued' {NEWEST}",
    "list by state, a deep page (cursor)": "SELECT * FROM distribution_requests WHERE state = "
    "'confirmed' AND (created_at, id) < (now() - interval '300 days', 'z') "
    f"{NEWEST}",
    "lane (waiting rows)": f"SELECT * FROM distribution_requests WHERE user_id = '{USER}' "
    f"AND {WAITING} ORDER BY priority DESC, seq",
    "pacing floor": f"SELECT max(lane_free_us) FROM distribution_attempts WHERE user_id = '{USER}'",
    "show: its attempts": "SELECT * FROM distribution_attempts WHERE request_id = "
    "(SELECT min(id) FROM distribution_requests) ORDER BY number",
    "enqueue: oldest queued of project": "SELECT id FROM distribution_requests WHERE "
    f"project_id = '{PROJECT}' AND user_id = '{USER}' AND state = 'queued' ORDER BY seq LIMIT 1",
    "reconciler: lanes with work": "SELECT DISTINCT user_id FROM distribution_requests "
    "WHERE state = 'queued'",
    "reconciler: expired leases": "SELECT id FROM distribution_requests WHERE state = "
    "'dispatching' AND lease_expires_at < now() LIMIT 500",
    "reconciler: outbox": "SELECT id FROM distribution_requests WHERE published_at IS NULL "
    "AND state = 'queued' ORDER BY seq LIMIT 500",
    "metrics: lane depth": f"SELECT user_id, count(*) FROM distribution_requests WHERE {WAITING} "
    "GROUP BY user_id",
    "metrics: tallies": "SELECT series, label, sum(n) FROM (SELECT series, label, n FROM "
    "metric_totals UNION ALL SELECT series, label, n FROM metric_deltas) x GROUP BY 1, 2",
}
TIME = re.compile(r"Execution Time: ([\d.]+) ms")
SCAN = re.compile(r"(Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan)[^(]*")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__)
    p.add_argument("url")
    p.add_argument("--plans", action="store_true", help="print each whole plan")
    p.add_argument("--build", type=int, default=0, help="build this many requests first")
    args = p.parse_args()
    engine = make_engine(args.url)
    if args.build:
        history_seed.build(engine, args.build)
    with engine.connect() as conn:
        for name, sql in QUERIES.items():
            plan = [r[0] for r in conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"))]
            took = next((m.group(1) for line in plan if (m := TIME.search(line))), "?")
            scans = sorted({m.group(0).strip() for line in plan for m in SCAN.finditer(line)})
            print(f"{name:38} {took:>8} ms  {'; '.join(scans)}")
            if args.plans:
                print("\n".join(plan) + "\n")
    engine.dispose()


if __name__ == "__main__":
    main()
