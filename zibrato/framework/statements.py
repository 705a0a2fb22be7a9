"""The repeated statement of an N+1 and the line of application code that issues it.

When one SQL statement runs :data:`REPEATED` times or more in one unit of work (a
request), the unit records ``db.client.statement.repeats``: how many times it ran, tagged
with the statement's normalized text and the application code that issued it. Three
parts, all framework-free:

* :func:`normalize` turns SQL into a bounded text that never holds a value: literals and
  placeholders become ``?``, IN-lists and repeated VALUES tuples collapse to one, quoted
  identifiers are unquoted, a select list of several columns becomes ``…``, comments go;
  it fits the wire protocol's 255 characters.
* :func:`find_location` walks the stack out from the query to the first frame of the
  application: not Django, SQLAlchemy, Zibrato, the standard library or site-packages
  (unless its module belongs to a package named in ``APP_PACKAGES``); and, when the query
  runs while a template renders, the template's name and line
  (:func:`zibrato.framework.templates.template_at`).
* :class:`RepeatedStatements` bounds and samples it, once per process: a statement's
  stack is walked at most once per :data:`WALK_EVERY` seconds (the default flush
  interval; between walks its last location is reused), the normalized text is computed
  once per statement, and at most :data:`MAX_PER_ROUTE` statements per route are kept
  (others are tagged ``db.query.text=_OTHER``, without a location).

What leaves the process: the normalized text, the code location (a path relative to its
``sys.path`` entry, a line number, a function's qualified name) and the template's name
and line. Never a parameter value. ``REPEATED_STATEMENTS = False`` sends none of it.

>>> normalize('SELECT "shop_category"."id", "shop_category"."name" FROM "shop_category" '
...           'WHERE "shop_category"."id" = %s LIMIT 21')
'SELECT … FROM shop_category WHERE shop_category.id = ? LIMIT ?'
>>> normalize("select * from t where a in (1, 2, 3) and b = 'O''Brien' -- who")
'select * from t where a in (?) and b = ?'
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import CodeType, FrameType

from zibrato.framework import schema
from zibrato.framework.templates import template_at
from zibrato.protocol import MAX_TAG_LENGTH

REPEATED = 3  # a statement that runs this many times in one unit of work is repeated
MAX_PER_ROUTE = 5  # statements kept per route; the others are tagged _OTHER
WALK_EVERY = 10.0  # seconds between two walks of one statement's stack (a default flush)
MAX_STATEMENTS = 2_000  # statements remembered per process (their texts and locations)
MAX_SOURCE = 4_096  # characters of a statement that are normalized; the rest is "…"
MAX_CODE_OBJECTS = 20_000  # code objects whose kind (application or not) is remembered
MAX_FRAMES = 400  # frames walked out from a query at most
SELECT_LIST = 40  # a select list longer than this (or of several columns) becomes "…"
ELLIPSIS = "…"

# Modules that are never the application, wherever they are installed.
LIBRARY_PACKAGES = frozenset(
    ("django", "sqlalchemy", "flask_sqlalchemy", "zibrato", "zibrato_django", "zibrato_flask")
)

_TOKENS = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?(?:\*/|$))
    | (?P<string>[nNeEbBxX]?'(?:[^']|'')*(?:'|$))
    | (?P<dquoted>"(?:[^"]|"")*(?:"|$))
    | (?P<backtick>`[^`]*(?:`|$))
    | (?P<cast>::)
    | (?P<placeholder>%\(\w+\)s|%s|\?|:\w+|\$\d+)
    | (?P<word>[^\W\d][\w$]*)
    | (?P<number>(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
    """,
    re.VERBOSE | re.DOTALL,
)
_IDENTIFIER = re.compile(r"[^\W\d][\w$]*")
_SPACES = re.compile(r"\s+")
_AROUND = re.compile(r"\(\s|\s\)|\s*,\s*")
_IN_LIST = re.compile(r"\b(IN)\s*\(\?(?:, \?)+\)", re.IGNORECASE)
_TUPLES = re.compile(r"(\((?:\?, )*\?\))(?:, \1)+")
_SELECT = re.compile(r"\bSELECT\s+(DISTINCT\s+)?", re.IGNORECASE)


def normalize(statement: str) -> str:
    """Return ``statement`` without values, in at most 255 characters (see the module)."""
    cut = len(statement) > MAX_SOURCE
    text = _TOKENS.sub(_token, statement[:MAX_SOURCE] if cut else statement)
    text = _SPACES.sub(" ", text).strip()
    text = _AROUND.sub(_tidy, text)
    text = _IN_LIST.sub(r"\1 (?)", text)
    text = _TUPLES.sub(r"\1", text)
    text = _collapse_select_list(text)
    if cut:
        text += " " + ELLIPSIS
    return text if len(text) <= MAX_TAG_LENGTH else text[: MAX_TAG_LENGTH - 1] + ELLIPSIS


def _token(match: re.Match[str]) -> str:
    kind = match.lastgroup
    token = match[0]
    if kind == "word" or kind == "cast":
        return token
    if kind == "comment":
        return " "
    if kind in ("dquoted", "backtick"):
        inner = token[1:-1] if len(token) > 1 and token[-1] == token[0] else token[1:]
        return inner if _IDENTIFIER.fullmatch(inner) else "?"
    return "?"  # a string, a number, a placeholder: values never leave


def _tidy(match: re.Match[str]) -> str:
    token = match[0]
    if "," in token:
        return ", "
    return "(" if token.startswith("(") else ")"


def _collapse_select_list(text: str) -> str:
    """Return ``text`` with its first select list as "…" when it is long or has commas."""
    select = _SELECT.search(text)
    if select is None:
        return text
    depth, start = 0, select.end()
    index = start
    lower = text.lower()
    while index < len(text):
        char = text[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and lower.startswith(" from ", index - 1) and index > start:
            columns = text[start : index - 1]
            if len(columns) > SELECT_LIST or _top_level_comma(columns):
                return f"{text[:start]}{ELLIPSIS} {text[index:]}"
            return text
        index += 1
    return text


def _top_level_comma(columns: str) -> bool:
    depth = 0
    for char in columns:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            return True
    return False


@dataclass(frozen=True)
class Location:
    """Where a statement was issued: application code, and the template rendering then."""

    file: str
    line: int
    function: str
    template: str | None = None
    template_line: int | None = None

    def tags(self) -> dict[str, str]:
        """Return this location as tags (``code.file.path``, ``code.line.number``...)."""
        found = {
            schema.CODE_FILE: schema.bounded(self.file),
            schema.CODE_LINE: str(self.line),
            schema.CODE_FUNCTION: schema.bounded(self.function),
        }
        if self.template is not None:
            found[schema.TEMPLATE_NAME] = schema.bounded(self.template)
            found[schema.TEMPLATE_LINE] = str(self.template_line or 0)
        return found


UNKNOWN = Location("<unknown>", 0, "<unknown>")


class ApplicationCode:
    """Tell the application's frames from the libraries' (cached per code object)."""

    def __init__(self, app_packages: Iterable[str] = ()) -> None:
        self.app_packages: frozenset[str] = frozenset(app_packages)
        self._libraries = _library_paths()
        self._kinds: dict[CodeType, str | None] = {}  # code -> its short path, None: library

    def add_packages(self, packages: Iterable[str]) -> None:
        """Count these packages' modules as the application's, wherever they are installed."""
        packages = frozenset(packages)
        if not packages <= self.app_packages:
            self.app_packages |= packages
            self._kinds.clear()

    def path_of(self, frame: FrameType) -> str | None:
        """Return the short path of ``frame``'s file if it is application code, else None."""
        code = frame.f_code
        try:
            return self._kinds[code]
        except KeyError:
            pass
        found = self._classify(code.co_filename, frame.f_globals)
        if len(self._kinds) >= MAX_CODE_OBJECTS:
            self._kinds.clear()
        self._kinds[code] = found
        return found

    def _classify(self, filename: str, module_globals: Mapping[str, object]) -> str | None:
        module = module_globals.get("__name__")
        package = module.partition(".")[0] if isinstance(module, str) else ""
        if package in self.app_packages:
            return short_path(filename)
        if (
            package in LIBRARY_PACKAGES
            or filename.startswith("<")
            or "__jinja_template__" in module_globals  # a template: found apart
            or filename.startswith(self._libraries)
        ):
            return None
        return short_path(filename)


def _library_paths() -> tuple[str, ...]:
    """The folders of the standard library and of installed packages."""
    paths = sysconfig.get_paths()
    found = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    installed = ("site-packages", "dist-packages")
    found.update(p for p in sys.path if p.rstrip(os.sep).endswith(installed))
    return tuple(sorted(os.path.join(os.path.abspath(p), "") for p in found if p))


def short_path(filename: str) -> str:
    """Return ``filename`` relative to the ``sys.path`` entry it is under (the longest)."""
    best = ""
    for entry in sys.path:
        base = os.path.join(os.path.abspath(entry or os.curdir), "")
        if filename.startswith(base) and len(base) > len(best):
            best = base
    return filename[len(best) :] if best else os.path.basename(filename)


_COMPREHENSION = re.compile(r"(?:\.<locals>)?\.<(?:listcomp|dictcomp|setcomp|genexpr)>$")


def function_name(code: CodeType) -> str:
    """Return a function's qualified name; a comprehension is part of its function."""
    name = code.co_qualname
    while True:
        shorter = _COMPREHENSION.sub("", name)
        if shorter == name:
            return name
        name = shorter


def find_location(frame: FrameType | None, code: ApplicationCode) -> Location:
    """Walk out from ``frame``: the first application frame, and the template rendering."""
    found: Location | None = None
    template: tuple[str, int] | None = None
    for _ in range(MAX_FRAMES):
        if frame is None:
            break
        if template is None:
            template = template_at(frame)
        if found is None:
            path = code.path_of(frame)
            if path is not None:
                found = Location(path, frame.f_lineno or 0, function_name(frame.f_code))
        frame = frame.f_back
    found = found or UNKNOWN
    if template is not None:
        return Location(found.file, found.line, found.function, template[0], template[1])
    return found


class RepeatedStatements:
    """Locate and tag repeated statements, bounded and sampled (one per process: SAMPLER).

    ``clock`` (seconds, monotonic) is injectable so tests can span many flushes at once;
    ``walks`` counts the stacks walked.
    """

    def __init__(
        self,
        *,
        every: float = WALK_EVERY,
        per_route: int = MAX_PER_ROUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = every
        self.per_route = per_route
        self.clock = clock
        self.code = ApplicationCode()
        self.walks = 0
        self._lock = threading.Lock()
        self._walked: dict[tuple[str, str], tuple[float, Location]] = {}
        self._texts: dict[str, str] = {}
        self._kept: dict[tuple[tuple[str, str], ...], set[str]] = {}
        self._tags: dict[tuple[object, ...], Mapping[str, str]] = {}

    def locate(self, namespace: str, statement: str, frame: FrameType | None) -> Location:
        """Return where ``statement`` was issued: walk out from ``frame``, or reuse the
        location found less than ``every`` seconds ago."""
        key = (namespace, statement)
        now = self.clock()
        walked = self._walked.get(key)
        if walked is not None and now - walked[0] < self.every:
            return walked[1]
        if walked is None and len(self._walked) >= MAX_STATEMENTS:
            return UNKNOWN
        location = find_location(frame, self.code)
        self.walks += 1
        self._walked[key] = (now, location)
        return location

    def tags(
        self, unit: Mapping[str, str], namespace: str, statement: str, location: Location
    ) -> Mapping[str, str]:
        """Return the tags of one repeated statement of the units tagged ``unit`` (a
        route's ``{"http.route": ...}``), ``_OTHER`` past the cap."""
        name = tuple(unit.items())
        key = (name, namespace, statement, location)
        found = self._tags.get(key)
        if found is not None:
            return found
        with self._lock:
            text = self._text(statement)
            kept = self._kept.setdefault(name, set())
            if text not in kept and len(kept) < self.per_route:
                kept.add(text)
            base = {**unit, schema.DB_NAMESPACE: schema.bounded(namespace)}
            if text in kept:
                found = {**base, schema.QUERY_TEXT: text, **location.tags()}
            else:
                found = {**base, schema.QUERY_TEXT: schema.OTHER}
            if len(self._tags) < MAX_STATEMENTS * 4:
                self._tags[key] = found
        return found

    def _text(self, statement: str) -> str:
        text = self._texts.get(statement)
        if text is None:
            text = normalize(statement)
            if len(self._texts) < MAX_STATEMENTS:
                self._texts[statement] = text
        return text

    def reset(self, *, clock: Callable[[], float] | None = None) -> None:
        """Forget every statement, route and walk (tests); optionally use another clock."""
        with self._lock:
            if clock is not None:
                self.clock = clock
            self.walks = 0
            self._walked.clear()
            self._texts.clear()
            self._kept.clear()
            self._tags.clear()


# The process's one sampler: "at most once per statement per flush per process".
SAMPLER = RepeatedStatements()
