"""Time every request and every view of one Flask app; record each request once, at its end.

Two small pieces, installed on the app by ``init_app``:

* :func:`request_timer` wraps ``app.wsgi_app`` (Flask's documented place for WSGI
  middleware): it starts the request clock before Flask does anything, notes the status
  that goes to the client and the URL rule, keeps this request's :class:`RequestState`
  in a context variable (for the view timer and the database hooks), and records
  everything once ``wsgi_app`` is over, in a ``finally``: after Flask's teardown, and
  whether the view, a hook or an error handler failed. For a streamed response that is
  when the response starts (Flask tears a ``stream_with_context`` request down then too,
  and again when the stream ends); nothing here reads the body.
* :func:`view_timer` wraps this app's ``dispatch_request`` (on the instance, never the
  class: other apps are untouched). Flask calls it after the last ``before_request`` and
  before the first ``after_request``, and it calls the view alone, so it times the view
  alone, blueprints included, and sees an exception the view raised even when an error
  handler turns it into a response. A 404/405 or a ``before_request`` that answers early
  never reaches a view, so records no view time.

An exception that no error handler takes (raised by a hook, or propagated in testing) is
learnt from Flask's ``got_request_exception`` signal, which Flask sends only then.

The state lives with the request (a context variable set around its WSGI call), not on
``g``: Flask shares one ``g`` between every request served inside an app context that is
already pushed (tests often do that), and two requests must never count into one another.
``g._zibrato`` holds the database tally of app contexts that are not requests (CLI
commands); see ``database``.

This runs for every request, so it is written for speed: closures rather than objects,
one call to record, events appended in the client's own shape (see ``record``).
Nothing here raises into the request: a failure is counted in the client's
``zibrato.publisher.dropped`` (reason ``flask_hook_failed``) and logged once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import request
from werkzeug.exceptions import HTTPException

from zibrato import levels, web
from zibrato.client import Zibrato
from zibrato.protocol import Event, Kind
from zibrato.web import QueryTally

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask.typing import ResponseReturnValue

    from zibrato_flask.extension import AppState

HOOK_FAILED = "flask_hook_failed"
_TIMER = int(Kind.TIMER)
_UNMATCHED = web.UNMATCHED_ROUTE

# The request being served in this context (None outside requests, on excluded paths, and
# in a streamed body that runs after the WSGI call returned).
current_request: ContextVar[RequestState | None] = ContextVar("zibrato_request", default=None)


class RequestState:
    """What Zibrato learns about one request before recording it."""

    # Class-level defaults: a request sets only what it learns (cheaper than an __init__).
    status: str | None = None
    route: str = _UNMATCHED
    view: float | None = None
    view_failed = False
    error: str | None = None
    tally: QueryTally | None = None


class EventBuffer(NamedTuple):
    """One level's buffer of a client, and what to call past ``soft_cap`` (as the client)."""

    queue: deque[Event]
    soft_cap: int
    overflow: Callable[[deque[Event], Event], None]


class Recorder(NamedTuple):
    """One app's client and the buffers its request metrics go to (None: level filtered)."""

    client: Zibrato
    info: EventBuffer | None
    error: EventBuffer | None

    @classmethod
    def for_client(cls, client: Zibrato) -> Recorder:
        """Return the recorder of ``client``, honouring its level threshold."""
        return cls(
            client,
            level_buffer(client, web.REQUEST_LEVEL),
            level_buffer(client, web.EXCEPTIONS_LEVEL),
        )


def level_buffer(client: Zibrato, level: str) -> EventBuffer | None:
    """Return where ``client`` buffers events of ``level``, or None below its threshold."""
    if levels.rank(level) < levels.rank(client.threshold):
        return None
    publisher = client.publisher
    return EventBuffer(publisher.queues[level], publisher.wake_threshold, publisher.overflow)


def request_timer(wsgi_app: WSGIApplication, app_state: AppState) -> WSGIApplication:
    """Return ``wsgi_app`` wrapped to time, then record, each request of one app."""
    exclude_paths = app_state.settings.exclude_paths

    def zibrato_request_timer(
        environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if exclude_paths and environ.get("PATH_INFO", "").startswith(exclude_paths):
            return wsgi_app(environ, start_response)
        start = perf_counter()
        state = RequestState()

        def note_status(status: str, headers: Any, exc_info: Any = None) -> Any:
            # Flask answers while its request object is still in the environ (teardown
            # drops it): the moment to read the URL rule, ``None`` for a 404 or 405.
            state.status = status
            rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
            state.route = getattr(rule, "rule", _UNMATCHED)
            return start_response(status, headers, exc_info)

        token = current_request.set(state)
        try:
            return wsgi_app(environ, note_status)
        finally:
            seconds = perf_counter() - start
            current_request.reset(token)
            record(app_state, state, seconds, environ.get("REQUEST_METHOD", ""))

    zibrato_request_timer.__wrapped__ = wsgi_app  # type: ignore[attr-defined]
    return zibrato_request_timer


def record(app_state: AppState, state: RequestState, seconds: float, method: str) -> None:
    """Record one request's timers, its error and its queries, once; never raise."""
    recorder = app_state.current_recorder or app_state.recorder()
    try:
        tags = app_state.tags.request(
            state.route, method, state.status, state.error, state.view_failed
        )
        # Zibrato.timing's shape, written out because this runs for every request: one
        # length check, then the request's events appended at once.
        info = recorder.info
        if info is not None:
            queue, soft_cap, overflow = info
            view = state.view
            events: tuple[Event, ...] = (
                ((_TIMER, web.REQUEST_DURATION, seconds, None, tags.request),)
                if view is None
                else (
                    (_TIMER, web.REQUEST_DURATION, seconds, None, tags.request),
                    (_TIMER, web.VIEW_DURATION, view, None, tags.view),
                )
            )
            if len(queue) + 2 <= soft_cap:
                queue.extend(events)
            else:
                for event in events:
                    overflow(queue, event)
        if tags.error is not None:
            recorder.client.incr(web.EXCEPTIONS, level=web.EXCEPTIONS_LEVEL, tags=tags.error)
        if state.tally is not None:
            state.tally.record(recorder.client, app_state.tags, state.route)
            app_state.check_engines()
    except Exception as failure:  # never into the request
        recorder.client.publisher.reject(HOOK_FAILED, f"request metrics not recorded: {failure!r}")


def view_timer(dispatch_request: Callable[[], ResponseReturnValue]) -> Callable[[], Any]:
    """Return one app's ``dispatch_request`` wrapped to time the view function alone."""

    def zibrato_view_timer() -> ResponseReturnValue:
        state = current_request.get()
        if state is None:  # an excluded path, or a request that did not come through WSGI
            return dispatch_request()
        start = perf_counter()
        try:
            result = dispatch_request()
        except BaseException as exc:
            if request.routing_exception is None:  # else: 404/405, no view ran
                state.view = perf_counter() - start
                if is_error(exc):
                    state.error = web.error_type(exc)
                    state.view_failed = True
            raise
        state.view = perf_counter() - start
        return result

    zibrato_view_timer.__wrapped__ = dispatch_request  # type: ignore[attr-defined]
    return zibrato_view_timer


def note_unhandled(sender: object, exception: BaseException, **extra: Any) -> None:
    """Note an exception no error handler took (``got_request_exception``)."""
    state = current_request.get()
    if state is not None:
        state.route = getattr(request.url_rule, "rule", _UNMATCHED)
        if state.error is None and is_error(exception):
            state.error = web.error_type(exception)


def is_error(exc: BaseException) -> bool:
    """Whether an exception counts as an error: not an HTTP answer below 500 (``abort(404)``)."""
    if isinstance(exc, HTTPException):
        return exc.code is None or exc.code >= 500
    return True
