"""Time every request and every view of one Flask app; record each request once, at its end.

Two small pieces, installed on the app by ``init_app``:

* :func:`request_timer` wraps ``app.wsgi_app`` (Flask's documented place for WSGI
  middleware): it starts the request clock before Flask does anything, notes the status
  that goes to the client and the URL rule, keeps this request's
  :class:`~zibrato.framework.units.RequestState` in its context variable (for the view timer
  and the database hooks), and records everything once ``wsgi_app`` is over, in a
  ``finally``: after Flask's teardown, and whether the view, a hook or an error handler
  failed. For a streamed response that is when the response starts (Flask tears a
  ``stream_with_context`` request down then too, and again when the stream ends);
  nothing here reads the body.
* :func:`view_timer` wraps this app's ``dispatch_request`` (on the instance, never the
  class: other apps are untouched). Flask calls it after the last ``before_request`` and
  before the first ``after_request``, and it calls the view alone, so it times the view
  alone, blueprints included, and sees an exception the view raised even when an error
  handler turns it into a response. A 404/405 or a ``before_request`` that answers early
  never reaches a view, so records no view time.

An exception that no error handler takes (raised by a hook, or propagated in testing) is
learnt from Flask's ``got_request_exception`` signal, which Flask sends only then. Which
exceptions are errors is the rule of ``docs/web-metrics.md``: any, except an
``HTTPException`` below 500 (``abort(404)``), Flask's own way of answering.

The state lives with the request (a context variable set around its WSGI call), not on
``g``: Flask shares one ``g`` between every request served inside an app context that is
already pushed (tests often do that), and two requests must never count into one another.
``g._zibrato`` holds the database tally of app contexts that are not requests (CLI
commands); see ``database``.

Nothing here raises into the request: a failure is counted in the client's
``zibrato.publisher.dropped`` (reason ``flask_hook_failed``) and logged once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from flask import current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from zibrato.client import Zibrato
from zibrato.framework import schema
from zibrato.framework.time_spent import ALL_ON, Switches
from zibrato.framework.units import RequestRecorder, RequestState, current_unit

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask.typing import ResponseReturnValue
    from werkzeug.wrappers import Request

HOOK_FAILED = "flask_hook_failed"
_UNMATCHED = schema.UNMATCHED_ROUTE


class InstrumentedApp(Protocol):
    """What the request and database hooks need of one app's state (``AppState``),
    named here so that neither imports the extension that holds it."""

    exclude: re.Pattern[str] | None  # ZIBRATO_EXCLUDE_PATHS, searched in the path
    switches: Switches  # which parts of where the time goes it measures
    current_recorder: RequestRecorder | None

    def recorder(self) -> RequestRecorder: ...

    def client(self) -> Zibrato: ...


def request_timer(wsgi_app: WSGIApplication, app_state: InstrumentedApp) -> WSGIApplication:
    """Return ``wsgi_app`` wrapped to time, then record, each request of one app."""
    exclude = app_state.exclude
    switches = app_state.switches

    def zibrato_request_timer(
        environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if exclude is not None and exclude.search(environ.get("PATH_INFO", "")):
            return wsgi_app(environ, start_response)
        start = perf_counter()
        state = RequestState()
        if switches is not ALL_ON:
            state.switches = switches

        def note_status(status: str, headers: Any, exc_info: Any = None) -> Any:
            # Flask answers while its request object is still in the environ (teardown
            # drops it): the moment to read the URL rule, ``None`` for a 404 or 405.
            state.status = status
            flask_request = environ.get("werkzeug.request")
            rule = getattr(flask_request, "url_rule", None)
            state.route = rule.rule if rule is not None else route_without_rule(flask_request)
            return start_response(status, headers, exc_info)

        token = current_unit.set(state)
        try:
            return wsgi_app(environ, note_status)
        finally:
            seconds = perf_counter() - start
            current_unit.reset(token)
            # Recording, written out here rather than in a function: it runs for every
            # request. It never raises into the request.
            recorder = app_state.current_recorder or app_state.recorder()
            try:
                recorder.record(state, environ.get("REQUEST_METHOD", ""), seconds)
            except Exception as failure:
                recorder.publisher.reject(HOOK_FAILED, f"request not recorded: {failure!r}")

    zibrato_request_timer.__wrapped__ = wsgi_app  # type: ignore[attr-defined]
    return zibrato_request_timer


def route_without_rule(flask_request: Request | None) -> str:
    """Return the route of a request that matched no rule: a 405's rule, else unmatched.

    A 405 means the path matched a rule for other methods: that rule is the route (as
    Django's, whose 405 comes from the view of the matched pattern). Found again only
    for 405s, so that no other request pays for it.
    """
    routing = getattr(flask_request, "routing_exception", None)
    if not isinstance(routing, MethodNotAllowed) or not routing.valid_methods:
        return _UNMATCHED
    try:
        adapter = current_app.create_url_adapter(flask_request)  # type: ignore[arg-type]
        if adapter is None:
            return _UNMATCHED
        rule, _ = adapter.match(method=sorted(routing.valid_methods)[0], return_rule=True)
        return str(rule.rule)
    except Exception:  # a redirect, a rule that went away: no route to name
        return _UNMATCHED


def view_timer(dispatch_request: Callable[[], ResponseReturnValue]) -> Callable[[], Any]:
    """Return one app's ``dispatch_request`` wrapped to time the view function alone."""

    def zibrato_view_timer() -> ResponseReturnValue:
        state = current_unit.get()
        if not isinstance(state, RequestState):  # an excluded path, not through WSGI, a task
            return dispatch_request()
        start = perf_counter()
        try:
            result = dispatch_request()
        except BaseException as exc:
            if state.rendering:  # a render that raised: Flask sends no template_rendered
                state.abandon_renders(perf_counter())
            if request.routing_exception is None:  # else: 404/405, no view ran
                state.view = perf_counter() - start
                if is_error(exc):
                    state.note_error(schema.error_type(exc), in_view=True)
            raise
        state.view = perf_counter() - start
        return result

    zibrato_view_timer.__wrapped__ = dispatch_request  # type: ignore[attr-defined]
    return zibrato_view_timer


def note_unhandled(sender: object, exception: BaseException, **extra: Any) -> None:
    """Note an exception no error handler took (``got_request_exception``)."""
    state = current_unit.get()
    if isinstance(state, RequestState):
        state.route = getattr(request.url_rule, "rule", _UNMATCHED)
        if is_error(exception):
            state.note_error(schema.error_type(exception), in_view=False)


def is_error(exc: BaseException) -> bool:
    """Whether an exception is an error: not an HTTP answer below 500 (``abort(404)``)."""
    if isinstance(exc, HTTPException):
        return exc.code is None or exc.code >= 500
    return True
