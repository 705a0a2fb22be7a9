"""Time every request and every view of one Flask app; record each request once, at its end.

Two small pieces, installed on the app by ``init_app``:

* :class:`RequestTimer` wraps ``app.wsgi_app`` (Flask's documented place for WSGI
  middleware): it starts the request clock before Flask does anything, notes the status
  that goes to the client, keeps this request's :class:`RequestState` in its WSGI environ
  and in a context variable (for the view timer and the database hooks), and records
  everything once ``wsgi_app`` is over, in a ``finally``: after Flask's teardown, and
  whether the view, a hook or an error handler failed. For a streamed response that is
  when the response starts (Flask tears a ``stream_with_context`` request down then too,
  and again when the stream ends); nothing here reads the body.
* :class:`ViewTimer` wraps this app's ``dispatch_request`` (on the instance, never the
  class: other apps are untouched). Flask calls it after the last ``before_request`` and
  before the first ``after_request``, and it calls the view alone, so it times the view
  alone, blueprints included, and sees an exception the view raised even when an error
  handler turns it into a response. A 404/405 or a ``before_request`` that answers early
  never reaches a view, so records no view time.

An exception that no error handler takes (raised by a hook, or propagated in testing) is
learnt from Flask's ``got_request_exception`` signal, which Flask sends only then.

The state lives with the request (its WSGI environ), not on ``g``: Flask shares one ``g``
between every request served inside an app context that is already pushed (tests often
do that), and two requests must never count into one another. ``g._zibrato`` holds the
database tally of app contexts that are not requests (CLI commands); see ``database``.

Nothing here raises into the request: a failure is counted in the client's
``zibrato.publisher.dropped`` (reason ``flask_hook_failed``) and logged once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import request
from werkzeug.exceptions import HTTPException

from zibrato import web
from zibrato.web import QueryTally

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask.typing import ResponseReturnValue

    from zibrato_flask.extension import AppState

ENVIRON_KEY = "zibrato.request"
HOOK_FAILED = "flask_hook_failed"

# The request being served in this context: found by the database hooks in ~20 ns.
current_request: ContextVar[RequestState | None] = ContextVar("zibrato_request", default=None)


class RequestState:
    """What Zibrato learns about one request before recording it."""

    __slots__ = ("error", "route", "start", "status", "tally", "view", "view_failed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.status: str | None = None
        self.route = web.UNMATCHED_ROUTE
        self.view: float | None = None
        self.view_failed = False
        self.error: str | None = None
        self.tally: QueryTally | None = None


class RequestTimer:
    """WSGI middleware around one app's ``wsgi_app``: time, then record, each request."""

    def __init__(self, wsgi_app: WSGIApplication, app_state: AppState) -> None:
        self.wsgi_app = wsgi_app
        self.app_state = app_state
        self.exclude_paths = app_state.settings.exclude_paths

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.exclude_paths and environ.get("PATH_INFO", "").startswith(self.exclude_paths):
            return self.wsgi_app(environ, start_response)
        state = RequestState(perf_counter())
        environ[ENVIRON_KEY] = state

        def note_status(status: str, headers: Any, exc_info: Any = None) -> Any:
            # Flask answers while the request still exists (it drops it from the environ
            # at teardown): the moment to read its URL rule.
            state.status = status
            state.route = route_of(environ.get("werkzeug.request"))
            return start_response(status, headers, exc_info)

        token = current_request.set(state)
        try:
            return self.wsgi_app(environ, note_status)
        finally:
            current_request.reset(token)
            self.record(environ, state)

    def record(self, environ: WSGIEnvironment, state: RequestState) -> None:
        """Record the request's timers, its error and its queries, once."""
        end = perf_counter()
        client = self.app_state.client()
        try:
            del environ[ENVIRON_KEY]  # a streamed body's queries come too late to count
            route = state.route
            status = state.status
            if status is not None:
                status = status[:3]
            elif state.error is not None:
                status = "500"  # propagated (testing, debug): what a server would answer
            tags = self.app_state.tags.request(
                route,
                web.request_method(environ.get("REQUEST_METHOD", "")),
                status,
                state.error,
                state.view_failed,
            )
            client.timing(web.REQUEST_DURATION, end - state.start, tags=tags.request)
            if state.view is not None:
                client.timing(web.VIEW_DURATION, state.view, tags=tags.view)
            if tags.error is not None:
                client.incr(web.EXCEPTIONS, level=web.EXCEPTIONS_LEVEL, tags=tags.error)
            if state.tally is not None:
                state.tally.record(client, self.app_state.tags, route)
                self.app_state.check_engines()
        except Exception as failure:  # never into the request
            client.publisher.reject(HOOK_FAILED, f"request metrics not recorded: {failure!r}")


class ViewTimer:
    """Time one app's ``dispatch_request``: the view function alone."""

    def __init__(self, dispatch_request: Callable[[], ResponseReturnValue]) -> None:
        self.dispatch_request = dispatch_request

    def __call__(self) -> ResponseReturnValue:
        state = current_request.get()
        if state is None:  # an excluded path, or a request that did not come through WSGI
            return self.dispatch_request()
        start = perf_counter()
        try:
            result = self.dispatch_request()
        except BaseException as exc:
            if request.routing_exception is None:  # else: 404/405, no view ran
                state.view = perf_counter() - start
                if is_error(exc):
                    state.error = web.error_type(exc)
                    state.view_failed = True
            raise
        state.view = perf_counter() - start
        return result


def note_unhandled(sender: object, exception: BaseException, **extra: Any) -> None:
    """Note an exception no error handler took (``got_request_exception``)."""
    state = current_request.get()
    if state is not None:
        state.route = route_of(request._get_current_object())  # type: ignore[attr-defined]
        if state.error is None and is_error(exception):
            state.error = web.error_type(exception)


def route_of(req: object) -> str:
    """Return the ``http.route`` of a request: its URL rule, else ``<unmatched>``."""
    rule = getattr(req, "url_rule", None)
    return web.UNMATCHED_ROUTE if rule is None else str(rule.rule)


def is_error(exc: BaseException) -> bool:
    """Whether an exception counts as an error: not an HTTP answer below 500 (``abort(404)``)."""
    if isinstance(exc, HTTPException):
        return exc.code is None or exc.code >= 500
    return True
