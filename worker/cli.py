"""The `spdist` command line (README, Commands)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from worker.errors import SpdistError
from worker.models import State

Handler = Callable[[argparse.Namespace], int]


def _ctx() -> Any:
    from worker.context import get_context

    return get_context()


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def cmd_migrate(args: argparse.Namespace) -> int:
    """`alembic upgrade head` on SPDIST_DATABASE_URL."""
    from worker.migrate import upgrade

    upgrade()
    print("database is at the latest migration")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """One Celery worker on the spdist queue."""
    from worker.celery_app import QUEUE, app

    argv = ["worker", "-Q", QUEUE, "--loglevel", args.loglevel]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    app.worker_main([*argv, *args.celery_args])
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    """The scheduler: runs the reconciler every SPDIST_RECONCILE_EVERY_S."""
    from worker import deliverer
    from worker.celery_app import app

    deliverer.start(_ctx())  # callbacks, in threads of their own (worker/deliverer.py)
    # Beat sends only reconciler ticks: no task-sent event, so Flower lists dispatches.
    app.conf.task_send_sent_event = False
    # The in-memory scheduler keeps no schedule file: only interval entries exist.
    app.start(
        ["beat", "-S", "celery.beat:Scheduler", "--loglevel", args.loglevel, *args.celery_args]
    )
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    """Validate, store and publish one distribution."""
    from worker import distributions, views

    ctx = _ctx()
    ids = (args.user, args.project, args.upload)
    new = distributions.validate(
        ctx,
        *ids,
        args.priority,
        not args.no_coalesce,
        hold=args.hold,
        callback_url=args.callback_url,
    )
    req = distributions.enqueue(ctx, new)
    if args.json:
        with ctx.sessions() as session:
            _print_json(views.describe(ctx, session, distributions.get(session, req.id)))
    else:
        print(req.id)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """One distribution with its attempts (ID may be a unique prefix)."""
    from worker import cli_view, distributions, views

    ctx = _ctx()
    with ctx.sessions() as session:
        rid = cli_view.resolve_id(session, args.id)
        data = views.describe(ctx, session, distributions.get(session, rid))
    if args.json:
        _print_json(data)
        return 0
    cli_view.console().print(cli_view.distribution_view(data))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    """Distributions, newest first."""
    from worker import cli_view, views

    ctx = _ctx()
    with ctx.sessions() as session:
        rows, _ = views.list_distributions(
            session,
            user_id=args.user,
            project_id=args.project,
            state=args.state,
            limit=args.limit,
        )
        placed = views.places(ctx, session, rows)
        data = [views.distribution_dict(r, placed.get(r.id), attempts=False) for r in rows]
    if args.json:
        _print_json(data)
        return 0
    cli_view.console().print(cli_view.distributions_table(data))
    return 0


def cmd_lanes(args: argparse.Namespace) -> int:
    """Every user's lane, in order, with estimated dispatch times."""
    from worker import cli_view, views

    ctx = _ctx()

    def lanes() -> list[dict[str, Any]]:
        with ctx.sessions() as session:
            return [lane.as_dict() for lane in views.lanes(ctx, session)]

    gap = ctx.settings.min_interval_s + ctx.settings.guard_s
    if args.json:
        _print_json(lanes())
    elif args.watch:
        return cli_view.watch(lambda: cli_view.lanes_view(lanes(), gap))
    else:
        cli_view.console().print(cli_view.lanes_view(lanes(), gap))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a waiting request."""
    from worker import distributions

    ctx = _ctx()
    req = distributions.cancel(ctx, _full_id(ctx, args.id))
    print(f"{req.id} {req.state}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """Put a failed or dead request back in line."""
    from worker import distributions

    ctx = _ctx()
    req = distributions.retry(ctx, _full_id(ctx, args.id))
    print(f"{req.id} {req.state}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    """Put a held request in line."""
    from worker import holds

    ctx = _ctx()
    req = holds.release(ctx, _full_id(ctx, args.id))
    print(f"{req.id} {req.state}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Distribute again the project's previous upload that reached Streampixel."""
    from worker import distributions, rollback, views

    ctx = _ctx()
    req = rollback.rollback(ctx, args.project, args.to)
    if args.json:
        with ctx.sessions() as session:
            _print_json(views.describe(ctx, session, distributions.get(session, req.id)))
    else:
        print(f"{req.id} {req.last_message}")
    return 0


def _full_id(ctx: Any, given: str) -> str:
    from worker.cli_view import resolve_id

    with ctx.sessions() as session:
        return resolve_id(session, given)


def _demo(args: argparse.Namespace) -> int:
    """The stack against a built-in fake Streampixel, fed with sample requests."""
    from worker.dev import demo

    return demo.run(Path(os.environ.get("SPDIST_DEMO_DIR", "spdist-demo")))


def _stack(name: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        from worker.dev import stack

        return int(getattr(stack, name)(args))

    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="spdist", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Handler, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    add("migrate", cmd_migrate, "Upgrade the database to the latest migration.")
    for name, fn, help_ in (
        ("worker", cmd_worker, "Run one Celery worker."),
        ("beat", cmd_beat, "Run the scheduler (exactly one)."),
    ):
        sp = add(name, fn, help_)
        if name == "worker":
            sp.add_argument("--concurrency", type=int, default=None)
        sp.add_argument("--loglevel", default="info")
        sp.add_argument("celery_args", nargs=argparse.REMAINDER, help="-- extra Celery args")
    sp = add("enqueue", cmd_enqueue, "Enqueue one distribution.")
    sp.add_argument("--user", required=True)
    sp.add_argument("--project", required=True)
    sp.add_argument("--upload", required=True)
    sp.add_argument("--priority", type=int, default=0)
    sp.add_argument("--no-coalesce", action="store_true")
    sp.add_argument("--hold", action="store_true", help="start held, until `spdist release`")
    sp.add_argument("--callback-url", help="POST each change of state there (README, Callbacks)")
    sp.add_argument("--json", action="store_true")
    sp = add("show", cmd_show, "Show one distribution with its attempts.")
    sp.add_argument("id")
    sp.add_argument("--json", action="store_true")
    sp = add("ls", cmd_ls, "List distributions, newest first.")
    sp.add_argument("--user")
    sp.add_argument("--project")
    sp.add_argument("--state", choices=[s.value for s in State])
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--json", action="store_true")
    sp = add("lanes", cmd_lanes, "Show every user's lane.")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--watch", action="store_true", help="redraw every second until Ctrl-C")
    sp = add("prune", cmd_prune, "Delete finished requests older than DAYS, with their attempts.")
    sp.add_argument("--older-than", type=_days, required=True, metavar="DAYS")
    sp.add_argument("--dry-run", action="store_true")
    sp = add("rollback", cmd_rollback, (cmd_rollback.__doc__ or "").strip())
    sp.add_argument("--project", required=True)
    sp.add_argument("--to", metavar="UPLOAD", help="this upload instead of the previous one")
    sp.add_argument("--json", action="store_true")
    for name, fn in (("cancel", cmd_cancel), ("retry", cmd_retry), ("release", cmd_release)):
        add(name, fn, (fn.__doc__ or "").strip()).add_argument("id")
    _add_stack_commands(add)
    return p


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete (or, with --dry-run, count) what retention lets go (worker/retention.py)."""
    from worker import retention

    print(retention.run(_ctx(), args.older_than, dry_run=args.dry_run))
    return 0


def _days(raw: str) -> float:
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not days > 0 or days == float("inf"):
        raise argparse.ArgumentTypeError(f"DAYS must be a number above 0, not {raw!r}")
    return days


def _add_stack_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("api", _stack("api"), "Run the HTTP API.")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8000)
    sp = add("flower", _stack("flower"), "Run Flower for this Celery app.")
    sp.add_argument("--port", type=int, default=5555)
    sp.add_argument("--address", default=None, help="default SPDIST_FLOWER_ADDRESS or 127.0.0.1")
    add("up", _stack("up"), "Migrate, then run API, worker, scheduler and Flower.")
    add("demo", _demo, "The stack against a built-in fake Streampixel, with samples.")


def one_line(exc: Exception) -> str:
    """A one-line reason; settings errors name the setting but never echo its value."""
    from pydantic import ValidationError as SettingsInvalid

    from worker.firstrun import UNMIGRATED, unmigrated

    if unmigrated(exc):
        return UNMIGRATED
    if isinstance(exc, SettingsInvalid):
        problems = "; ".join(
            f"SPDIST_{str(e['loc'][0]).upper()}{''.join(f'[{x}]' for x in e['loc'][1:])}: "
            f"{e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        return f"invalid configuration: {problems}"
    return " ".join(f"{type(exc).__name__}: {_without_sql(exc)}".split())


def _without_sql(exc: Exception) -> str:
    """A database error's own first line, not SQLAlchemy's text with the statement in it."""
    from sqlalchemy.exc import StatementError

    if isinstance(exc, StatementError) and exc.orig is not None:
        return (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
    return str(exc)


SERVICES = ("api", "up", "worker", "beat", "flower", "enqueue")
WANT_TOKENS = ("api", "up")


def _check_start(command: str) -> None:
    """Settings are read (and checked) before a service starts, not at its first use; say
    what would surprise, on one line each."""
    if command not in SERVICES:
        return
    from worker.settings import get_settings

    errors, warnings = get_settings().start_problems()
    if errors:
        raise SpdistError("invalid configuration: " + "; ".join(errors))
    for warning in warnings if command in WANT_TOKENS else ():
        print(f"spdist {command}: warning: {warning}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `spdist` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if getattr(args, "celery_args", None) and args.celery_args[0] == "--":
        args.celery_args = args.celery_args[1:]
    try:
        _check_start(args.command)
        code = args.fn(args)
    except SpdistError as exc:
        print(f"spdist {args.command}: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # one line for the operator; no traceback noise
        print(f"spdist {args.command}: {one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
