"""Templates, what the Django and Flask adapters share: bounded names, and where a
template was rendering when a statement ran.

Each adapter hooks rendering its own way (Django: the render call itself, since its
``template_rendered`` signal fires only under the test runner; Flask: its real
``before_render_template`` and ``template_rendered`` signals) and notes each render on
its unit's state (``TimeSpentState.open_span`` / ``add_render``). What they share:

* :data:`NAMES`: the ``template.name`` tag values of the process, at most
  :data:`MAX_TEMPLATE_NAMES` (a site renders few templates; names made up at run time,
  ``Template(string)`` or ``from_string``, would not stay few): past it, ``_OTHER``.
* :func:`template_at`: the template a stack frame is rendering, and the line: a Jinja2
  frame (compiled template code, which Jinja2 marks with ``__jinja_template__``) or a
  Django template node's ``render_annotated``, read by duck typing, nothing imported.
"""

from __future__ import annotations

import threading
from types import FrameType

from zibrato.framework import schema

MAX_TEMPLATE_NAMES = 500
UNNAMED = "<string>"  # a template made from a string has no name


class TemplateNames:
    """The bounded ``template.name`` values of one process (thread-safe)."""

    def __init__(self, limit: int = MAX_TEMPLATE_NAMES) -> None:
        self.limit = limit
        self._names: dict[object, str] = {}
        self._lock = threading.Lock()

    def tag(self, name: object) -> str:
        """Return the tag value of a template named ``name`` (``_OTHER`` past the cap)."""
        found = self._names.get(name)
        if found is not None:
            return found
        with self._lock:
            if len(self._names) >= self.limit:
                return schema.OTHER
            found = schema.bounded(name) if isinstance(name, str) and name else UNNAMED
            self._names[name] = found
        return found


NAMES = TemplateNames()


def template_at(frame: FrameType) -> tuple[str, int] | None:
    """Return ``(template name, line)`` if ``frame`` renders a template, else None."""
    jinja = frame.f_globals.get("__jinja_template__")
    if jinja is not None:
        try:
            line = jinja.get_corresponding_lineno(frame.f_lineno or 0)
        except Exception:  # not the Jinja2 we know: no line rather than a failure
            line = 0
        return NAMES.tag(getattr(jinja, "name", None)), int(line)
    if frame.f_code.co_name != "render_annotated":
        return None
    node = frame.f_locals.get("self")  # django.template.base.Node.render_annotated
    origin = getattr(node, "origin", None)
    token = getattr(node, "token", None)
    if origin is None or token is None:
        return None
    line = getattr(token, "lineno", 0)
    return NAMES.tag(getattr(origin, "template_name", None)), line if isinstance(line, int) else 0
