"""Celery tasks measured like requests: ``from zibrato.celery import instrument``.

``instrument(app)`` is :func:`zibrato.framework.celery.instrument` (docs/celery.md); with
the Django app or the Flask extension, the ``CELERY`` setting calls it for you.
"""

from zibrato.framework.celery import instrument

__all__ = ["instrument"]
