"""``ZibratoMiddleware``: request, view and per-request database metrics.

Put it first in ``MIDDLEWARE`` so that the request timer includes every other middleware.
It works natively under WSGI and ASGI (``sync_capable`` and ``async_capable``: Django
adapts nothing). Responses and exceptions pass through untouched; a streaming response's
body is neither consumed nor wrapped, so its time is the time to the response object
(the first byte), not to the last. A failure inside Zibrato is counted and logged once
(:mod:`zibrato_django.failures`), never raised into the request.

What it records, and which exceptions are errors, is the shared schema of
:mod:`zibrato.framework.schema` (``docs/web-metrics.md``); this module only reads it off Django.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponseBase
from django.http.multipartparser import MultiPartParserError

from zibrato.framework import schema
from zibrato.framework.time_spent import ALL_ON
from zibrato.framework.units import RequestRecorder, RequestState, current_unit
from zibrato_django import failures, zibrato
from zibrato_django.conf import RequestPlan, request_plan
from zibrato_django.routes import route_of

# Django's own ways of answering with a status below 500 (django.core.handlers.exception):
# answers, not errors.
ANSWERS = (Http404, PermissionDenied, BadRequest, SuspiciousOperation, MultiPartParserError)

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
        if plan.switches is not ALL_ON:
            state.switches = plan.switches
        token = current_unit.set(state)
        start = perf_counter()
        response = None
        try:
            response = self.get_response(request)
        finally:
            end = perf_counter()
            current_unit.reset(token)
            record(plan, request, response, state, end - start, end)
        return response

    async def __acall__(self, request: HttpRequest) -> Response:
        plan = _plan_for(request)
        get_response: Callable[[HttpRequest], Awaitable[Response]] = self.get_response
        if plan is None:
            return await get_response(request)
        state = RequestState()
        if plan.switches is not ALL_ON:
            state.switches = plan.switches
        token = current_unit.set(state)
        start = perf_counter()
        response = None
        try:
            response = await get_response(request)
        finally:
            end = perf_counter()
            current_unit.reset(token)
            record(plan, request, response, state, end - start, end)
        return response

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        """Note when the view starts (every middleware's request phase is done)."""
        state = current_unit.get()
        if isinstance(state, RequestState):
            state.view_start = perf_counter()

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Note when and how the view failed; Django goes on handling the exception."""
        state = current_unit.get()
        if isinstance(state, RequestState):
            if state.view_start is not None:
                state.view = perf_counter() - state.view_start
            if not isinstance(exception, ANSWERS):
                state.note_error(schema.error_type(exception), in_view=True)

    async def _aprocess_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        self.process_view(request, view, args, kwargs)

    async def _aprocess_exception(self, request: HttpRequest, exception: Exception) -> None:
        self.process_exception(request, exception)


def note_unhandled(sender: object, **kwargs: Any) -> None:
    """Note an exception Django answers with a 500 (a ``got_request_exception`` receiver).

    Django sends it for the view's errors (already noted by ``process_exception``) and for
    those of a middleware listed after Zibrato's, never for its own 4xx answers.
    """
    try:
        state = current_unit.get()
        exception = sys.exc_info()[1]
        if (
            isinstance(state, RequestState)
            and exception is not None
            and not isinstance(exception, ANSWERS)
        ):
            state.note_error(schema.error_type(exception), in_view=False)
    except Exception as exc:
        failures.report("django_middleware", exc)


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
    seconds: float,
    end: float,
) -> None:
    """Record one request's metrics, at once (no response: the exception propagated)."""
    try:
        state.route = route_of(request.resolver_match)
        if response is not None:
            state.status = response.status_code
        if state.view is None and state.view_start is not None:
            # No hook runs when a view returns: its time ends when the response is back.
            state.view = end - state.view_start
        _recorder(plan).record(state, request.method or "", seconds)
    except Exception as exc:
        failures.report("django_middleware", exc)


# Tags per kind of request, shared by every request (bounded: see TagCache).
_tags = schema.TagCache()
# The recorder of the settings in force and of the shared client (both can change).
_current: tuple[RequestPlan, RequestRecorder] | None = None


def _recorder(plan: RequestPlan) -> RequestRecorder:
    """Return the recorder for ``plan``'s levels and the shared client as it is now."""
    global _current
    current = _current
    if current is None or current[0] is not plan or current[1].publisher is not zibrato.publisher:
        recorder = RequestRecorder(
            zibrato,
            tags=_tags,
            request_level=plan.request_level,
            db_level=plan.db_level,
            namespace=plan.db_namespace,
            breakdown=plan.switches.breakdown,
        )
        current = _current = (plan, recorder)
    return current[1]
