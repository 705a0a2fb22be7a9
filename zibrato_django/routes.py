"""The ``http.route`` of a Django request: its URL pattern, regex patterns made readable.

``path()`` patterns are their own template (``shop/<str:region>/items/<int:pk>/``). Regex
patterns (``re_path``, and every Django REST framework router) are rendered the same
way, so that a route reads as a template and stays bounded: a named group is ``<name>``,
an unnamed one ``<arg1>``, ``<arg2>``...; anchors (``^``, ``$``, ``\\A``, ``\\Z``) and an
optional trailing slash (``/?``) are dropped, escaped characters unescaped (``\\.`` is
``.``) and an optional non-capturing group is shown in brackets::

    api/users/(?P<pk>[^/.]+)/$                 ->  api/users/<pk>/
    api/users\\.(?P<format>[a-z0-9]+)/?$        ->  api/users.<format>
    ^files/(?:(?P<folder>[a-z]+)/)?(?P<name>.+)\\Z  ->  files/[<folder>/]<name>
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.urls import ResolverMatch

from zibrato.framework import schema

# Characters that only a regex pattern holds (a path() route has none of them).
_REGEX_SIGNS = frozenset("^$\\()[]?*+{}|")
_QUANTIFIERS = "?*+"
# A non-capturing group, with or without flags for its scope: (?:...), (?i:...).
_SCOPED = re.compile(r"\?[aiLmsux-]*:")
# Rendered routes, by pattern: as many as the project has patterns (bounded for safety).
_rendered: dict[str, str] = {}
_MAX_RENDERED = 10_000


def route_of(match: ResolverMatch | None) -> str:
    """Return the bounded ``http.route`` of a resolved request: its URL pattern.

    The full pattern including ``include()`` prefixes (``shop/items/<int:pk>/``), regex
    patterns rendered alike; the view's dotted name when the pattern is empty;
    ``<unmatched>`` when nothing resolved.
    """
    if match is None:
        return schema.UNMATCHED_ROUTE
    route = match.route
    if not route:
        return view_path(match.func)
    rendered = _rendered.get(route)  # every request: one lookup once the route is known
    return rendered if rendered is not None else readable_route(route)


def readable_route(route: str) -> str:
    """Return ``route`` as a template: a regex pattern rendered, a path() one as it is."""
    rendered = _rendered.get(route)
    if rendered is None:
        rendered = _render(route) if _REGEX_SIGNS.intersection(route) else route
        if len(_rendered) < _MAX_RENDERED:
            _rendered[route] = rendered
    return rendered


def view_path(view: Callable[..., Any]) -> str:
    """Return ``module.name`` of a view function or of a class-based view's class."""
    target = getattr(view, "view_class", view)
    module = getattr(target, "__module__", None) or "<unknown>"
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{name}"


def _render(pattern: str) -> str:
    text = _Renderer(pattern).render()
    return text[:-2] if text.endswith("/?") else text


class _Renderer:
    """Walk one regex pattern once, left to right, writing its template."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.unnamed = 0

    def render(self, start: int = 0, end: int | None = None) -> str:
        pattern, out = self.pattern, []
        end = len(pattern) if end is None else end
        index = start
        while index < end:
            char = pattern[index]
            if char == "\\" and index + 1 < end:
                escaped = pattern[index + 1]
                if escaped not in "AZ":  # \A and \Z are anchors
                    out.append(escaped if not escaped.isalnum() else char + escaped)
                index += 2
            elif char in "^$":
                index += 1
            elif char == "(":
                close = _closing(pattern, index, end)
                index = self._group(index + 1, close, out)
            elif char == "[":
                close = _class_end(pattern, index, end)
                out.append(pattern[index : close + 1])
                index = close + 1
            else:
                out.append(char)
                index += 1
        return "".join(out)

    def _group(self, start: int, close: int, out: list[str]) -> int:
        """Write the group between ``start`` and ``close``; return where to go on."""
        pattern = self.pattern
        after = close + 1
        quantifier = pattern[after] if after < len(pattern) else ""
        if quantifier in _QUANTIFIERS and quantifier:
            after += 1
        if pattern.startswith("?P<", start):
            out.append(f"<{pattern[start + 3 : pattern.index('>', start)]}>")
        elif (flags := _SCOPED.match(pattern, start, close)) is not None:  # (?:...) (?i:...)
            inner = self.render(flags.end(), close)
            out.append(f"[{inner}]" if quantifier in ("?", "*") and quantifier else inner)
        elif pattern.startswith("?", start):
            pass  # a lookaround, a comment or flags: nothing a path shows
        else:
            self.unnamed += 1
            out.append(f"<arg{self.unnamed}>")
        return after


def _closing(pattern: str, start: int, end: int) -> int:
    """Return the index of the ``)`` closing the group opened at ``start``."""
    depth, index = 0, start
    while index < end:
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if char == "[":
            index = _class_end(pattern, index, end) + 1
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return index
        index += 1
    return end - 1  # unbalanced (Django would not have compiled it): the rest is the group


def _class_end(pattern: str, start: int, end: int) -> int:
    """Return the index of the ``]`` closing the character class opened at ``start``."""
    index = start + 1
    if index < end and pattern[index] == "^":
        index += 1
    if index < end and pattern[index] == "]":
        index += 1  # a ] right after [ or [^ is a literal
    while index < end:
        if pattern[index] == "\\":
            index += 2
            continue
        if pattern[index] == "]":
            return index
        index += 1
    return end - 1
