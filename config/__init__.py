"""Project wiring. Importing the Celery app here makes it the default app for ``shared_task``."""

from .celery import app as celery_app

__all__ = ("celery_app",)
