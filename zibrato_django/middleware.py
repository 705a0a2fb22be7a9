"""``ZibratoMiddleware``: request, view and per-request database metrics.

Put it first in ``MIDDLEWARE`` so that the request timer includes every other middleware.
It works natively under WSGI and ASGI (``sync_capable`` and ``async_capable``: Django
adapts nothing). Responses and exceptions pass through untouched; a streaming response's
body is neither consumed nor wrapped, so its time is the time to the response object
(the first byte), not to the last. A failure inside Zibrato is counted and logged once
(:mod:`zibrato_django.failures`), never raised into the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import DEFAULT_DB_ALIAS
from django.http import HttpRequest, HttpResponseBase
from django.urls import ResolverMatch

from zibrato.protocol import MAX_TAG_LENGTH
from zibrato_django import failures, zibrato
from zibrato_django.conf import RequestPlan, request_plan
from zibrato_django.request_state import AliasTally, RequestState, current_request

REQUEST_METRIC = "http.server.request.duration"
VIEW_METRIC = "http.server.view.duration"
EXCEPTIONS_METRIC = "http.server.exceptions"
EXCEPTIONS_LEVEL = "error"
QUERIES_METRIC = "db.client.request.queries"
DB_DURATION_METRIC = "db.client.request.duration"
DUPLICATES_METRIC = "db.client.request.duplicates"

UNMATCHED = "<unmatched>"
OTHER_METHOD = "_OTHER"
# The standard HTTP methods (RFC 9110 and PATCH), as OpenTelemetry names them; any other
# method is _OTHER so that a client cannot make up tag values.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
_NO_QUERIES = {DEFAULT_DB_ALIAS: AliasTally()}

Response = HttpResponseBase


class ZibratoMiddleware:
    """Time every request and view; count each request's queries (``MIDDLEWARE[0]``)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
            # Coroutine hooks, so that Django runs them as they are instead of in a thread.
            self.process_view = self._aprocess_view  # type: ignore[method-assign,assignment]
            self.process_exception = self._aprocess_exception  # type: ignore[method-assign,assignment]

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        plan = _plan_for(request)
        if plan is None:
            return self.get_response(request)
        state = RequestState()
        token = current_request.set(state)
        start = perf_counter()
        try:
            response = self.get_response(request)
        finally:
            end = perf_counter()
            current_request.reset(token)
        record(plan, request, response, state, end - start, end)
        return response

    async def __acall__(self, request: HttpRequest) -> Response:
        plan = _plan_for(request)
        get_response: Callable[[HttpRequest], Awaitable[Response]] = self.get_response
        if plan is None:
            return await get_response(request)
        state = RequestState()
        token = current_request.set(state)
        start = perf_counter()
        try:
            response = await get_response(request)
        finally:
            end = perf_counter()
            current_request.reset(token)
        record(plan, request, response, state, end - start, end)
        return response

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        """Note when the view starts (every middleware's request phase is done)."""
        state = current_request.get()
        if state is not None:
            state.view_start = perf_counter()

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Note when and how the view failed; Django goes on handling the exception."""
        state = current_request.get()
        if state is not None:
            state.view_end = perf_counter()
            state.error_type = type(exception).__qualname__

    async def _aprocess_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        self.process_view(request, view, args, kwargs)

    async def _aprocess_exception(self, request: HttpRequest, exception: Exception) -> None:
        self.process_exception(request, exception)


def _plan_for(request: HttpRequest) -> RequestPlan | None:
    """Return what to record for ``request``, or None when it is not measured."""
    try:
        plan = request_plan()
        exclude = plan.exclude
        if exclude is not None and exclude.search(request.path_info):
            return None
        return plan
    except Exception as exc:
        failures.report("django_middleware", exc)
        return None


def record(
    plan: RequestPlan,
    request: HttpRequest,
    response: Any,
    state: RequestState,
    duration: float,
    end: float,
) -> None:
    """Record one request's metrics (built into locals, handed over at the end)."""
    try:
        method = request.method if request.method in KNOWN_METHODS else OTHER_METHOD
        key = (route_of(request.resolver_match), method, response.status_code, state.error_type)
        tags = _tag_sets.get(key)
        if tags is None:
            if len(_tag_sets) >= MAX_TAG_SETS:
                _tag_sets.clear()
            tags = _tag_sets[key] = TagSet(*key)
        level = plan.request_level
        timing = zibrato.timing
        timing(REQUEST_METRIC, duration, level=level, tags=tags.request)
        if state.view_start:
            view_time = (state.view_end or end) - state.view_start
            timing(VIEW_METRIC, view_time, level=level, tags=tags.view)
        if tags.exception is not None:
            zibrato.incr(EXCEPTIONS_METRIC, level=EXCEPTIONS_LEVEL, tags=tags.exception)
        observe = zibrato.observe
        db_level = plan.db_level
        duplicates = 0
        for alias, tally in (state.aliases or _NO_QUERIES).items():
            db_tags = tags.database.get(alias) or tags.for_alias(alias)
            observe(QUERIES_METRIC, tally.count, level=db_level, tags=db_tags)
            timing(DB_DURATION_METRIC, tally.seconds, level=db_level, tags=db_tags)
            duplicates += tally.duplicates
        observe(DUPLICATES_METRIC, duplicates, level=db_level, tags=tags.route)
    except Exception as exc:
        failures.report("django_middleware", exc)


class TagSet:
    """Every tags dict one kind of request needs, built once and never mutated after."""

    __slots__ = ("database", "exception", "request", "route", "view")

    def __init__(self, route: str, method: str, status: int, error: str | None) -> None:
        self.route = {"http.route": route}
        self.view = {"http.route": route, "http.request.method": method}
        self.request = {**self.view, "http.response.status_code": str(status)}
        self.exception: dict[str, str] | None = None
        if error is not None:
            self.view["error.type"] = self.request["error.type"] = error
            self.exception = {"http.route": route, "error.type": error}
        self.database: dict[str, dict[str, str]] = {}

    def for_alias(self, alias: str) -> dict[str, str]:
        """Return (and remember) the tags of one database alias's per-request metrics."""
        tags = self.database[alias] = {**self.route, "db.namespace": alias}
        return tags


# Tag sets per (route, method, status, error): a few per route. Bounded: cleared when full.
_tag_sets: dict[tuple[str, str, int, str | None], TagSet] = {}
MAX_TAG_SETS = 4096


def route_of(match: ResolverMatch | None) -> str:
    """Return the bounded ``http.route`` of a resolved request: its URL pattern.

    The full pattern including ``include()`` prefixes (``shop/items/<int:pk>/``); the
    view's dotted name when the pattern is empty; ``<unmatched>`` when nothing resolved.
    """
    if match is None:
        return UNMATCHED
    route = match.route
    if not route:
        route = view_path(match.func)
    return route if len(route) <= MAX_TAG_LENGTH else route[:MAX_TAG_LENGTH]


def view_path(view: Callable[..., Any]) -> str:
    """Return ``module.name`` of a view function or of a class-based view's class."""
    target = getattr(view, "view_class", view)
    module = getattr(target, "__module__", None) or "<unknown>"
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{name}"
