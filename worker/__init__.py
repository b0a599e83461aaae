"""spdist's core: the Celery app, the pacer, the dispatch flow and the system of record."""

from worker.celery_app import app

__all__ = ["app"]
