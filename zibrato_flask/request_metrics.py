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
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import request
from werkzeug.exceptions import HTTPException

from zibrato import levels, web
from zibrato.client import Zibrato
from zibrato.instruments import LevelBuffer
from zibrato.protocol import Kind
from zibrato.web import QueryTally

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask.typing import ResponseReturnValue

    from zibrato_flask.extension import AppState

ENVIRON_KEY = "zibrato.request"
HOOK_FAILED = "flask_hook_failed"
_TIMER = int(Kind.TIMER)

# The request being served in this context: found by the database hooks in ~20 ns.
current_request: ContextVar[RequestState | None] = ContextVar("zibrato_request", default=None)


class RequestState:
    """What Zibrato learns about one request before recording it."""

    # Class-level defaults: a request sets only what it learns (cheaper than an __init__
    # that sets every field).
    status: str | None = None
    route: str = web.UNMATCHED_ROUTE
    view: float | None = None
    view_failed = False
    error: str | None = None
    tally: QueryTally | None = None

    def __init__(self, start: float) -> None:
        self.start = start


class Recorder(NamedTuple):
    """One app's client and the buffers its request metrics go to (None: level filtered)."""

    client: Zibrato
    info: LevelBuffer | None
    error: LevelBuffer | None

    @classmethod
    def for_client(cls, client: Zibrato) -> Recorder:
        """Return the recorder of ``client``, honouring its level threshold."""
        return cls(
            client,
            level_buffer(client, web.REQUEST_LEVEL),
            level_buffer(client, web.EXCEPTIONS_LEVEL),
        )


def level_buffer(client: Zibrato, level: str) -> LevelBuffer | None:
    """Return where ``client`` buffers events of ``level``, or None below its threshold."""
    if levels.rank(level) < levels.rank(client.threshold):
        return None
    publisher = client.publisher
    return LevelBuffer(publisher.queues[level], publisher.wake_threshold, publisher.overflow)


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
            end = perf_counter()
            current_request.reset(token)
            del environ[ENVIRON_KEY]  # a streamed body's queries come too late to count
            self.record(state, end - state.start, environ.get("REQUEST_METHOD", ""))

    def record(self, state: RequestState, seconds: float, method: str) -> None:
        """Record the request's timers, its error and its queries, once."""
        recorder = self.app_state.recorder()
        try:
            status = state.status
            if status is not None:
                status = status[:3]
            elif state.error is not None:
                status = "500"  # propagated (testing, debug): what a server would answer
            tags = self.app_state.tags.request(
                state.route, web.request_method(method), status, state.error, state.view_failed
            )
            # The shape of Zibrato.timing, written out for speed: one length check and
            # one append per event (this runs for every request).
            info = recorder.info
            if info is not None:
                queue, soft_cap, overflow = info
                event = (_TIMER, web.REQUEST_DURATION, seconds, None, tags.request)
                if len(queue) < soft_cap:
                    queue.append(event)
                else:
                    overflow(queue, event)
                if state.view is not None:
                    event = (_TIMER, web.VIEW_DURATION, state.view, None, tags.view)
                    if len(queue) < soft_cap:
                        queue.append(event)
                    else:
                        overflow(queue, event)
            if tags.error is not None:
                recorder.client.incr(web.EXCEPTIONS, level=web.EXCEPTIONS_LEVEL, tags=tags.error)
            if state.tally is not None:
                state.tally.record(recorder.client, self.app_state.tags, state.route)
                self.app_state.check_engines()
        except Exception as failure:  # never into the request
            recorder.client.publisher.reject(
                HOOK_FAILED, f"request metrics not recorded: {failure!r}"
            )


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
