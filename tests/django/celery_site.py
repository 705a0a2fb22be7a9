"""A Celery app of the Django tests, and a URLconf whose view runs one of its tasks.

``ZIBRATO["CELERY"] = "celery_site:app"`` names it (creating it connects to nothing);
``app.conf.task_always_eager`` is set by the tests that run its task inside a request.
"""

from __future__ import annotations

from celery import Celery
from django.http import HttpRequest, JsonResponse
from django.urls import path

app = Celery("agree", broker="memory://")
not_an_app = object()


@app.task(name="agree.confirm", shared=False)
def confirm() -> int:
    """Count the shelves three times over: the same query, two duplicates."""
    from djtest.models import Shelf

    return [Shelf.objects.count() for _ in range(3)][-1]


def place(request: HttpRequest) -> JsonResponse:
    from djtest.models import Shelf

    Shelf.objects.exists()
    return JsonResponse({"shelves": confirm.delay().get()})


urlpatterns = [path("orders/", place)]
