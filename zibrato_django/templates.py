"""Template time per request: Django templates and Django's Jinja2 backend, render by render.

Django's ``template_rendered`` signal is sent only under its test runner, so the render
call itself is wrapped (a :class:`~zibrato.framework.patches.Patch`, as
django-debug-toolbar's template panel does): ``django.template.base.Template.render``,
which every Django template goes through (``render()``, ``TemplateResponse``, an
``{% include %}``, a ``Template(...)`` of your own), and the Jinja2 backend's
``Template.render`` when Jinja2 is installed. Inside a request each render is a
``template`` span of the request's breakdown and adds its time, under its bounded
``template.name``, to the request's ``template.request.duration``; inside a Celery task
it is a part of the task's breakdown; outside both (an email rendered by a command)
nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

from zibrato.framework.breakdown import TEMPLATE
from zibrato.framework.patches import Patch
from zibrato.framework.templates import NAMES
from zibrato.framework.units import current_unit
from zibrato_django import failures


def _measured(name_of: Callable[[Any], object]) -> Callable[[Any], Any]:
    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def render(template: Any, *args: Any, **kwargs: Any) -> Any:
            state = current_unit.get()
            if state is None or not state.switches.templates:
                return original(template, *args, **kwargs)
            start = perf_counter()
            span = state.open_span(TEMPLATE, start)
            try:
                return original(template, *args, **kwargs)
            finally:
                end = perf_counter()
                try:
                    state.close_span(span, end)
                    state.add_render(NAMES.tag(name_of(template)), end - start)
                except Exception as exc:
                    failures.report("django_template_hook", exc)

        return render

    return wrap


def _patches() -> list[Patch]:
    from django.template.base import Template

    found = [Patch(Template, "render", _measured(lambda template: template.name))]
    try:
        from django.template.backends import jinja2
    except ImportError:  # Jinja2 is not installed: no Jinja2 backend to measure
        return found
    found.append(Patch(jinja2.Template, "render", _measured(lambda t: t.template.name)))
    return found


_installed: list[Patch] = []


def install() -> None:
    """Measure template rendering from now on (idempotent)."""
    if not _installed:
        _installed.extend(_patches())
    for patch in _installed:
        patch.install()


def uninstall() -> None:
    """Stop measuring template rendering."""
    for patch in _installed:
        patch.uninstall()
