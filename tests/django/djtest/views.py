"""Views of the test site: one per behaviour the tests look at."""

import os
import time

from asgiref.sync import sync_to_async
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.views import View
from django.views.decorators.http import require_GET

from djtest.models import Item, Note, Shelf

VIEW_SECONDS = 0.050


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("home")


def items(request: HttpRequest) -> HttpResponse:
    count = Item.objects.count()
    first = Item.objects.order_by("pk").first()
    return HttpResponse(f"{count} {first.name if first else '-'}")


def item(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse(get_object_or_404(Item, pk=pk).name)


def n_plus_one(request: HttpRequest) -> HttpResponse:
    names = [[item.name for item in shelf.items.all()] for shelf in Shelf.objects.order_by("pk")]
    return JsonResponse({"shelves": names})


def bulk(request: HttpRequest) -> HttpResponse:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.executemany("INSERT INTO djtest_shelf (name) VALUES (%s)", [("a",), ("b",), ("c",)])
    return HttpResponse("ok")


def notes(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(Note.objects.count()))


def slow(request: HttpRequest) -> HttpResponse:
    time.sleep(VIEW_SECONDS)
    return HttpResponse("slow")


def boom(request: HttpRequest) -> HttpResponse:
    raise ValueError("boom")


def slow_boom(request: HttpRequest) -> HttpResponse:
    time.sleep(VIEW_SECONDS)
    raise ValueError("slow boom")


def denied(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied("no")


def missing(request: HttpRequest) -> HttpResponse:
    raise Http404("no such thing")


def suspicious(request: HttpRequest) -> HttpResponse:
    raise SuspiciousOperation("a made-up header")


def unavailable(request: HttpRequest) -> HttpResponse:
    """A 503 without any exception: a server error all the same."""
    return HttpResponse("try later", status=503)


@require_GET
def get_only(request: HttpRequest) -> HttpResponse:
    return HttpResponse("got")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def body():
        yield b"first,"
        yield b"second"

    return StreamingHttpResponse(body(), content_type="text/plain")


async def async_items(request: HttpRequest) -> HttpResponse:
    count = await Item.objects.acount()
    names = await sync_to_async(list)(Item.objects.values_list("name", flat=True))
    return HttpResponse(f"{count} {','.join(names)}")


async def async_slow(request: HttpRequest) -> HttpResponse:
    import asyncio

    await asyncio.sleep(VIEW_SECONDS)
    return HttpResponse("async slow")


def create_shelf(request: HttpRequest) -> HttpResponse:
    shelf = Shelf.objects.create(name="new")
    shelf.name = "renamed"
    shelf.save()
    shelf.delete()
    return HttpResponse("ok")


def pid(request: HttpRequest) -> HttpResponse:
    """Answer this process's id, after ``?sleep=SECONDS`` (so that every worker gets work)."""
    time.sleep(min(float(request.GET.get("sleep", 0)), 1.0))
    return HttpResponse(str(os.getpid()))


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


class ShelfView(View):
    def get(self, request: HttpRequest, region: str, slug: str) -> HttpResponse:
        return HttpResponse(f"shelf {slug}")


def atomic_count(request: HttpRequest) -> HttpResponse:
    """One query in a transaction: BEGIN and COMMIT around it (docs/django.md)."""
    from django.db import transaction

    with transaction.atomic():
        return HttpResponse(str(Item.objects.count()))


def stream_with_queries(request: HttpRequest) -> StreamingHttpResponse:
    """A streamed body that queries while it is produced, after the view returned."""

    def body():
        yield b"items:"
        yield str(Item.objects.count()).encode()

    return StreamingHttpResponse(body(), content_type="text/plain")
