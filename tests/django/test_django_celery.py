"""Celery in a Django project: ``ZIBRATO["CELERY"]`` measures the app's tasks; run eagerly
inside a request, a task is recorded (no queue wait, nothing published) and its queries
count toward both the task and the request. (Real workers: tests/celery.)"""

from __future__ import annotations

from collections.abc import Iterator

import celery_site
import pytest
from django.core.checks import Error
from django.test import Client, override_settings

from zibrato.framework import celery, schema
from zibrato.testing import CapturedMetrics
from zibrato_django.checks import check_config


@pytest.fixture
def eager() -> Iterator[None]:
    celery_site.app.conf.task_always_eager = True
    try:
        with override_settings(ROOT_URLCONF="celery_site", ZIBRATO={"CELERY": "celery_site:app"}):
            yield
    finally:
        celery_site.app.conf.task_always_eager = False


@pytest.mark.django_db
def test_an_eager_task_in_a_request_counts_toward_both(
    eager: None, metrics: CapturedMetrics
) -> None:
    assert Client().get("/orders/").json() == {"shelves": 0}
    (task,) = metrics.filter(schema.TASK_DURATION)
    assert task.tags == {schema.TASK_NAME: "agree.confirm", schema.TASK_OUTCOME: "success"}
    assert metrics.values(schema.DB_TASK_QUERIES) == [3]
    assert metrics.values(schema.DB_TASK_DUPLICATES) == [2]
    (request,) = metrics.filter(schema.DB_REQUEST_QUERIES)
    assert request.value == 4 and request.tags["http.route"] == "orders/"
    for name in (schema.TASK_QUEUE_DURATION, schema.TASK_QUEUE_UNMEASURED, schema.TASK_PUBLISHED):
        assert name not in metrics


def test_the_setting_instruments_the_app_and_a_change_undoes_it() -> None:
    with override_settings(ZIBRATO={"CELERY": "celery_site:app"}):
        assert celery.instrument(celery_site.app).app is celery_site.app  # already, the same
        before = len(celery.celery_process.instrumented)
    assert len(celery.celery_process.instrumented) == before - 1  # the setting went away


def test_a_celery_app_that_does_not_import_is_e007() -> None:
    with override_settings(ZIBRATO={"CELERY": "celery_site:no_such_app"}):
        (error,) = [m for m in check_config() if isinstance(m, Error)]
    assert error.id == "zibrato.E007"
    assert error.msg.startswith("ZIBRATO['CELERY']: 'celery_site:no_such_app': cannot import it")
