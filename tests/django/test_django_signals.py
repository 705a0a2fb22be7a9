"""Model signals: saves and deletes counted per model."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client, override_settings

from zibrato.testing import CapturedMetrics

pytestmark = pytest.mark.django_db


def test_saves_and_deletes_are_counted_per_model(client: Client, metrics: CapturedMetrics) -> None:
    client.get("/create/")  # create, update, delete one Shelf
    saves = metrics.filter("django.model.saves")
    assert [(e.type, e.level, e.value) for e in saves] == [("counter", "info", 1)] * 2
    assert [e.tags["created"] for e in saves] == ["true", "false"]
    assert {e.tags["model"] for e in saves} == {"djtest.Shelf"}
    assert metrics.total("django.model.deletes", tags={"model": "djtest.Shelf"}) == 1


def test_model_signals_can_be_turned_off(metrics: CapturedMetrics) -> None:
    from djtest.models import Shelf

    with override_settings(ZIBRATO={**settings.ZIBRATO, "MODEL_SIGNALS": False}):
        Shelf.objects.create(name="quiet").delete()
    assert not metrics.filter("django.model.saves")
    assert not metrics.filter("django.model.deletes")
