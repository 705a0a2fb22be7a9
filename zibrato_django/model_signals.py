"""Count model saves and deletes (``MODEL_SIGNALS``, on by default)."""

from __future__ import annotations

from typing import Any

from django.db.models import Model
from django.db.models.signals import post_delete, post_save

from zibrato_django import failures, zibrato
from zibrato_django.conf import request_plan

SAVES_METRIC = "django.model.saves"
DELETES_METRIC = "django.model.deletes"
MODEL_LEVEL = "info"
DISPATCH_UID = "zibrato_django.model_signals"

# Tags per (model, created), built once: events keep a reference to their tags.
_tags: dict[tuple[type[Model], bool | None], dict[str, str]] = {}


def model_tags(model: type[Model], created: bool | None) -> dict[str, str]:
    """Return the (shared, never mutated) tags of a save or (``created`` None) a delete."""
    tags = _tags.get((model, created))
    if tags is None:
        tags = {"model": model._meta.label}
        if created is not None:
            tags["created"] = "true" if created else "false"
        _tags[(model, created)] = tags
    return tags


def count_save(sender: type[Model], created: bool = False, **kwargs: Any) -> None:
    """Add one to ``django.model.saves`` (a ``post_save`` receiver)."""
    try:
        if request_plan().model_signals:
            zibrato.incr(SAVES_METRIC, level=MODEL_LEVEL, tags=model_tags(sender, bool(created)))
    except Exception as exc:
        failures.report("django_model_signals", exc)


def count_delete(sender: type[Model], **kwargs: Any) -> None:
    """Add one to ``django.model.deletes`` (a ``post_delete`` receiver)."""
    try:
        if request_plan().model_signals:
            zibrato.incr(DELETES_METRIC, level=MODEL_LEVEL, tags=model_tags(sender, None))
    except Exception as exc:
        failures.report("django_model_signals", exc)


def connect() -> None:
    """Connect the receivers (once, whatever the number of calls)."""
    post_save.connect(count_save, dispatch_uid=DISPATCH_UID)
    post_delete.connect(count_delete, dispatch_uid=DISPATCH_UID)
