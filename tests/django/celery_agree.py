"""A Celery app for the settings tests (``ZIBRATO["CELERY"] = "celery_agree:app"``):
creating it connects to nothing."""

from celery import Celery

app = Celery("agree", broker="memory://")
not_an_app = object()
