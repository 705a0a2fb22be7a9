"""Time every request and every view of one Flask app, and record them at teardown.

Three small pieces, installed on the app by ``init_app``:

* :class:`RequestTimer` wraps ``app.wsgi_app`` (Flask's documented place for WSGI
  middleware): it starts the request clock before Flask does anything, notes the status
  that goes to the client, and keeps this request's :class:`RequestState` in its WSGI
  environ and in a context variable (for the database hooks).
* :class:`ViewTimer` wraps this app's ``dispatch_request`` (on the instance, never the
  class: other apps are untouched). Flask calls it after the last ``before_request`` and
  before the first ``after_request``, and it calls the view alone, so it times the view
  alone, blueprints included, and sees an exception the view raised even when an error
  handler turns it into a response. A 404/405 or a ``before_request`` that answers early
  never reaches a view, so records no view time.
* :func:`make_teardown` gives the ``teardown_request`` function that records everything
  once: teardown runs even when the view or an ``after_request`` failed, and for a
  ``stream_with_context`` body only when the stream ends. Nothing here reads the body.

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
    """What Zibrato learns about one request before recording it at teardown."""

    __slots__ = ("error", "start", "status", "tally", "view")

    def __init__(self, start: float) -> None:
        self.start = start
        self.status: str | None = None
        self.view: float | None = None
        self.error: str | None = None
        self.tally: QueryTally | None = None


class RequestTimer:
    """WSGI middleware around one app's ``wsgi_app``: the request clock and its status."""

    def __init__(self, wsgi_app: WSGIApplication, exclude_paths: tuple[str, ...]) -> None:
        self.wsgi_app = wsgi_app
        self.exclude_paths = exclude_paths

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.exclude_paths and environ.get("PATH_INFO", "").startswith(self.exclude_paths):
            return self.wsgi_app(environ, start_response)
        state = RequestState(perf_counter())
        environ[ENVIRON_KEY] = state

        def note_status(status: str, headers: Any, exc_info: Any = None) -> Any:
            state.status = status
            return start_response(status, headers, exc_info)

        token = current_request.set(state)
        try:
            return self.wsgi_app(environ, note_status)
        finally:
            current_request.reset(token)


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
            raise
        state.view = perf_counter() - start
        return result


def is_error(exc: BaseException) -> bool:
    """Whether an exception counts as an error: not an HTTP answer below 500 (``abort(404)``)."""
    if isinstance(exc, HTTPException):
        return exc.code is None or exc.code >= 500
    return True


def make_teardown(app_state: AppState) -> Callable[[BaseException | None], None]:
    """Return the ``teardown_request`` function that records one app's request metrics."""
    tag_cache = app_state.tags

    def record_request(exc: BaseException | None) -> None:
        end = perf_counter()
        req = request._get_current_object()  # type: ignore[attr-defined]
        state: RequestState | None = req.environ.get(ENVIRON_KEY)
        if state is None:  # an excluded path or a context pushed by hand
            return
        del req.environ[ENVIRON_KEY]  # one request, one record
        client = app_state.client()
        try:
            rule = req.url_rule
            route = web.UNMATCHED_ROUTE if rule is None else rule.rule
            error = state.error
            if error is None and exc is not None and is_error(exc):
                error = web.error_type(exc)
            status = state.status
            if status is not None:
                status = status[:3]
            elif exc is not None:
                status = "500"  # propagated (testing, debug): what a server would answer
            tags = tag_cache.request(
                route, web.request_method(req.method), status, error, state.error is not None
            )
            client.timing(web.REQUEST_DURATION, end - state.start, tags=tags.request)
            if state.view is not None:
                client.timing(web.VIEW_DURATION, state.view, tags=tags.view)
            if tags.error is not None:
                client.incr(web.EXCEPTIONS, level=web.EXCEPTIONS_LEVEL, tags=tags.error)
            if state.tally is not None:
                state.tally.record(client, tag_cache, route)
            app_state.check_engines()
        except Exception as failure:  # never into the request
            client.publisher.reject(HOOK_FAILED, f"request metrics not recorded: {failure!r}")

    return record_request
