"""Template time per request, from Flask's own template signals.

Flask sends ``before_render_template`` and ``template_rendered`` around every
``render_template`` (real signals, unlike Django's): :func:`connect` listens to them for
one app. Inside a request each render is a ``template`` span of the request's time
breakdown and adds its time, under its bounded ``template.name``, to the request's
``template.request.duration`` (inside a Celery task: a part of the task's breakdown). A
render that raises sends no ``template_rendered``: the view timer ends such a render
where the exception leaves the view (``TimeSpentState.abandon_renders``); a task's
breakdown ends it when the task is recorded.
"""

from __future__ import annotations

from contextlib import suppress
from time import perf_counter
from typing import Any

from flask import Flask, before_render_template, template_rendered

from zibrato.framework.breakdown import TEMPLATE
from zibrato.framework.templates import NAMES
from zibrato.framework.units import current_unit
from zibrato_flask.request_metrics import HOOK_FAILED


def connect(app: Flask) -> None:
    """Measure ``app``'s template rendering from now on."""
    before_render_template.connect(_started, sender=app)
    template_rendered.connect(_rendered, sender=app)


def _started(sender: Flask, template: Any, context: Any, **extra: Any) -> None:
    state = current_unit.get()
    if state is None or not state.switches.templates:
        return
    try:
        start = perf_counter()
        rendering = state.rendering
        if rendering is None:
            rendering = state.rendering = []
        rendering.append((template, start, state.open_span(TEMPLATE, start)))
    except Exception as failure:  # a signal receiver's exception reaches render_template
        _report(sender, failure)


def _rendered(sender: Flask, template: Any, context: Any, **extra: Any) -> None:
    state = current_unit.get()
    if state is None or not state.rendering:
        return
    try:
        rendering = state.rendering
        end = perf_counter()
        for index in range(len(rendering) - 1, -1, -1):
            if rendering[index][0] is template:
                _, start, span = rendering.pop(index)
                state.close_span(span, end)
                state.add_render(NAMES.tag(getattr(template, "name", None)), end - start)
                return
    except Exception as failure:
        _report(sender, failure)


def _report(app: Flask, failure: Exception) -> None:
    """Count a failure of ours (``flask_hook_failed``) and log it once, never raise it."""
    app_state = app.extensions.get("zibrato")
    with suppress(Exception):
        if app_state is not None:
            recorder = app_state.recorder()
            recorder.publisher.reject(HOOK_FAILED, f"render not measured: {failure!r}")
