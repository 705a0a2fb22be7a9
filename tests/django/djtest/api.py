"""A Django REST framework API: a router's viewsets with format suffixes, nested includes.

Its URL patterns are regular expressions (DRF routers write ``re_path`` patterns), so the
tests see how regex routes read as ``http.route`` tags.
"""

from typing import Any

from django.http import HttpRequest, HttpResponse
from rest_framework import routers, viewsets
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response


class UserViewSet(viewsets.ViewSet):
    renderer_classes = [JSONRenderer]

    def list(self, request: Request, format: str | None = None) -> Response:
        return Response([{"id": 1}, {"id": 2}])

    def retrieve(self, request: Request, pk: str, format: str | None = None) -> Response:
        return Response({"id": pk})


class OrderViewSet(UserViewSet):
    pass


def legacy(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return HttpResponse("legacy")


router = routers.DefaultRouter()
router.register("users", UserViewSet, basename="user")
nested = routers.SimpleRouter()
nested.register("orders", OrderViewSet, basename="order")
