"""Ordinary middlewares that sit behind Zibrato's in the test site."""

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

SLOW_SECONDS = 0.030


def slow_paths(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    """Sleep 30 ms before handing on any request under /slow/."""

    def middleware(request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/slow/"):
            time.sleep(SLOW_SECONDS)
        return get_response(request)

    return middleware


def early_return(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[..., HttpResponse]:
    """Answer /early/ itself: the request never reaches a view."""

    def middleware(request: HttpRequest) -> HttpResponse:
        if request.path == "/early/":
            return HttpResponse("answered by a middleware", status=202)
        return get_response(request)

    return middleware


def fail_after(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    """Fail after /fail/after/'s view succeeded: an error that is not the view's."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if request.path == "/fail/after/":
            raise LookupError("the middleware failed")
        return response

    return middleware


def sabotage(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    """Break what Zibrato reads after /sabotage/'s view: its failure must stay Zibrato's."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if request.path == "/sabotage/":
            request.resolver_match = 42  # type: ignore[assignment]
        return response

    return middleware
