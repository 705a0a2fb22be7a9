"""What every framework adapter records, framework-free: one metric schema for all.

The Django and Flask adapters record the same names with the same tags (OpenTelemetry's
semantic conventions), so one dashboard serves both; Celery's tasks
(:mod:`zibrato.framework.celery`) are units of work like requests, with names of their own
and the same per-unit database metrics and time breakdown (``component``: where a unit's
time went, :mod:`zibrato.framework.time_spent`). This module holds those names, the
rules that keep tag values bounded (a route template or ``<unmatched>``, never a raw path;
an unknown HTTP method or SQL operation becomes ``_OTHER``), the rule that says what is
an error, and the tag dictionaries, built once per combination. What one request
accumulates and how it is recorded is in :mod:`zibrato.framework.units`.

The error rule (``docs/web-metrics.md``), framework-free part: an exception that is an
error (each adapter says which are not: the framework's own answers below 500, such as
``Http404`` or ``abort(404)``) tags the request with ``error.type`` = its class's
qualified name and adds one to ``http.server.exceptions``; a response with a 5xx status
and no such exception carries ``error.type`` = the status code, and counts no exception.

>>> request_method("get"), request_method("BREW")
('GET', '_OTHER')
>>> operation_name("  (SELECT 1) UNION (SELECT 2)"), operation_name("frobnicate")
('SELECT', '_OTHER')
>>> tags = TagCache().request("items/<int:pk>/", "GET", 503, None, False)
>>> tags.request["error.type"], tags.error is None
('503', True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from zibrato.protocol import MAX_TAG_LENGTH

# -- metric names (DESIGN §4) ----------------------------------------------------------------
REQUEST_DURATION = "http.server.request.duration"
VIEW_DURATION = "http.server.view.duration"
EXCEPTIONS = "http.server.exceptions"
DB_REQUEST_QUERIES = "db.client.request.queries"
DB_REQUEST_DURATION = "db.client.request.duration"
DB_REQUEST_DUPLICATES = "db.client.request.duplicates"
DB_OPERATION_DURATION = "db.client.operation.duration"
TASK_DURATION = "celery.task.duration"
TASK_OUTCOMES = "celery.task.outcomes"
TASK_QUEUE_DURATION = "celery.task.queue.duration"
TASK_QUEUE_UNMEASURED = "celery.task.queue.unmeasured"
TASK_PUBLISHED = "celery.task.published"
DB_TASK_QUERIES = "db.client.task.queries"
DB_TASK_DURATION = "db.client.task.duration"
DB_TASK_DUPLICATES = "db.client.task.duplicates"
# Why is it slow (docs/web-metrics.md): where each unit's time goes, and what repeats.
BREAKDOWN = "http.server.request.breakdown"
TASK_BREAKDOWN = "celery.task.breakdown"
HTTP_CLIENT_DURATION = "http.client.request.duration"
CACHE_REQUEST_CALLS = "cache.request.calls"
CACHE_REQUEST_HITS = "cache.request.hits"
CACHE_REQUEST_MISSES = "cache.request.misses"
CACHE_REQUEST_DURATION = "cache.request.duration"
TEMPLATE_REQUEST_DURATION = "template.request.duration"
STATEMENT_REPEATS = "db.client.statement.repeats"

# -- their levels (the adapters' defaults for the request and per-request DB metrics) ---------
REQUEST_LEVEL = "info"
DB_REQUEST_LEVEL = "info"
EXCEPTIONS_LEVEL = "error"
DB_OPERATION_LEVEL = "debug"
TASK_LEVEL = "info"

# -- tag keys --------------------------------------------------------------------------------
ROUTE = "http.route"
METHOD = "http.request.method"
STATUS = "http.response.status_code"
ERROR_TYPE = "error.type"
DB_NAMESPACE = "db.namespace"
DB_OPERATION = "db.operation.name"
TASK_NAME = "celery.task.name"
TASK_OUTCOME = "celery.task.outcome"
REASON = "reason"
COMPONENT = "component"
APP_COMPONENT = "app"  # the breakdown's remainder: the view's own code and the framework's
BREAKDOWN_COMPONENTS = ("db", "http.client", "cache", "template", APP_COMPONENT)
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
# The route of the request an outgoing call was made in: our own key, since on a client
# metric OpenTelemetry's http.route would mean the route the *server* matched (a call made
# in a task carries the task's celery.task.name instead).
PARENT_ROUTE = "zibrato.route"
CACHE_ALIAS = "cache.alias"
TEMPLATE_NAME = "template.name"
TEMPLATE_LINE = "template.line.number"
QUERY_TEXT = "db.query.text"
CODE_FILE = "code.file.path"
CODE_LINE = "code.line.number"
CODE_FUNCTION = "code.function.name"

# -- bounded tag values ----------------------------------------------------------------------
UNMATCHED_ROUTE = "<unmatched>"
OTHER = "_OTHER"
# The HTTP methods OpenTelemetry knows (RFC 9110, PATCH and QUERY); any other is _OTHER,
# so that a client cannot make up tag values.
KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY")
)
# The first word of a statement, as db.operation.name; anything else is _OTHER.
KNOWN_OPERATIONS = frozenset(
    (
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "WITH",
        "CREATE", "ALTER", "DROP", "TRUNCATE", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT",
        "RELEASE", "SET", "SHOW", "EXPLAIN", "PRAGMA", "CALL", "EXEC", "EXECUTE", "COPY",
        "VACUUM", "ANALYZE", "GRANT", "REVOKE", "LOCK", "DECLARE", "FETCH", "CLOSE",
    )
)  # fmt: skip
# Enough of a statement to hold its first word after any indentation and parentheses:
# the operation is read from this slice, never from a whole (maybe huge) statement.
_OPERATION_PREFIX = 32

# Tag combinations cached per TagCache (routes x methods x statuses x errors, namespaces):
# bounded values, but a cap all the same; past it, tags are built afresh each time.
MAX_CACHED_TAGS = 10_000
# SQL texts whose operation tags are cached per namespace; past this the cache starts
# again (an application runs few distinct statements, and the hot ones come back).
MAX_CACHED_STATEMENTS = 4096


def request_method(method: str) -> str:
    """Return the method as a tag value: a known HTTP method in capitals, else ``_OTHER``."""
    upper = method.upper()
    return upper if upper in KNOWN_METHODS else OTHER


def error_type(exc: BaseException) -> str:
    """Return the ``error.type`` tag value for an exception: its class's qualified name."""
    return type(exc).__qualname__


def operation_name(statement: object) -> str:
    """Return the SQL operation (``SELECT``, ``INSERT``...) of a statement, else ``_OTHER``."""
    if not isinstance(statement, str):
        return OTHER
    words = statement[:_OPERATION_PREFIX].lstrip(" \t\r\n(").split(None, 1)
    word = words[0].upper() if words else ""
    return word if word in KNOWN_OPERATIONS else OTHER


def bounded(value: str) -> str:
    """Return ``value`` cut to the longest tag value the wire protocol accepts."""
    return value if len(value) <= MAX_TAG_LENGTH else value[:MAX_TAG_LENGTH]


class DatabaseNames(NamedTuple):
    """The names of one kind of unit's database metrics (a request's, a task's)."""

    queries: str
    duration: str
    duplicates: str


REQUEST_DATABASE = DatabaseNames(DB_REQUEST_QUERIES, DB_REQUEST_DURATION, DB_REQUEST_DUPLICATES)
TASK_DATABASE = DatabaseNames(DB_TASK_QUERIES, DB_TASK_DURATION, DB_TASK_DUPLICATES)


class TagCache:
    """Tag dictionaries built once per distinct combination and shared by every request.

    A tags mapping handed to a client is read later, on the publisher thread, so it must
    never change afterwards: these never do, and reusing them saves building a dict per
    request. Every tag value here is bounded (routes, methods, statuses, error types,
    namespaces), and the cache stops growing at ``limit`` entries (then builds afresh).
    """

    def __init__(self, limit: int = MAX_CACHED_TAGS) -> None:
        self.limit = limit
        self._request: dict[tuple[str, str, str | int | None, str | None, bool], RequestTags] = {}
        self._routes: dict[str | None, UnitTags] = {}
        self._operations: dict[tuple[str, str], Mapping[str, str]] = {}
        self._statements: dict[str, dict[object, Mapping[str, str]]] = {}

    def request(
        self,
        route: str,
        method: str,
        status: str | int | None,
        error: str | None,
        view_failed: bool,
    ) -> RequestTags:
        """Return the tags of the request timer, the view timer and the exceptions counter.

        ``method`` and ``status`` may be given as they come (``"get"``, ``"200 OK"`` or
        ``200``): they are normalised when a combination is first seen. ``error`` is the
        request's ``error.type`` from an exception (or None); the view's timer carries it
        only when ``view_failed`` (the view raised, not a hook after it). No status with
        an error means the exception propagated out of the app: tagged 500, what a
        server answers.
        """
        key = (route, method, status, error, view_failed)
        found = self._request.get(key)
        if found is None:
            code = str(status)[:3] if status is not None else None if error is None else "500"
            found = RequestTags.build(
                self.route(route), request_method(method), code, error, view_failed
            )
            if len(self._request) < self.limit:
                self._request[key] = found
        return found

    def route(self, route: str | None) -> UnitTags:
        """Return the tags of one route's metrics (``None``: a unit of work outside a request)."""
        found = self._routes.get(route)
        if found is None:
            found = (
                UnitTags({}, {})
                if route is None
                else UnitTags({ROUTE: bounded(route)}, {PARENT_ROUTE: bounded(route)})
            )
            if len(self._routes) < self.limit:
                self._routes[route] = found
        return found

    def operation(self, namespace: str, statement: object) -> Mapping[str, str]:
        """Return the tags of one query's operation timer (cached by the SQL text)."""
        by_statement = self._statements.get(namespace)
        if by_statement is None:
            by_statement = self._statements[namespace] = {}
        try:
            found = by_statement.get(statement)
        except TypeError:  # an unhashable statement object
            return self._operation(namespace, operation_name(statement))
        if found is None:
            found = self._operation(namespace, operation_name(statement))
            if len(by_statement) >= MAX_CACHED_STATEMENTS:
                by_statement.clear()
            by_statement[statement] = found
        return found

    def _operation(self, namespace: str, operation: str) -> Mapping[str, str]:
        key = (namespace, operation)
        found = self._operations.get(key)
        if found is None:
            found = {DB_NAMESPACE: bounded(namespace), DB_OPERATION: operation}
            if len(self._operations) < self.limit:
                self._operations[key] = found
        return found


class UnitTags:
    """The tags that name one kind of unit of work: a route (``{"http.route": ...}``), a
    task (``{"celery.task.name": ...}``) or nothing (a command); and, built once from
    them, the tags of its per-unit metrics (database, tasks published, where its time
    went, its outgoing calls).

    ``parent`` is what an outgoing HTTP call made in this unit carries to name it
    (default: ``unit``; a route's is ``{"zibrato.route": ...}``).
    """

    __slots__ = ("_calls", "_databases", "_published", "_tagged", "parent", "unit")

    def __init__(self, unit: Mapping[str, str], parent: Mapping[str, str] | None = None) -> None:
        self.unit = unit
        self.parent = unit if parent is None else parent
        self._databases: dict[str, Mapping[str, str]] = {}
        self._published: dict[str, Mapping[str, str]] = {}
        self._tagged: dict[tuple[str, str], Mapping[str, str]] = {}
        self._calls: dict[tuple[object, ...], Mapping[str, str]] = {}

    def client_call(
        self, address: tuple[str, str], method: object, status: object, error: str | None
    ) -> Mapping[str, str]:
        """Return the tags of an outgoing HTTP call made in this kind of unit.

        ``address`` is the bounded ``(server.address, server.port)``; ``method`` and
        ``status`` are as the HTTP library gives them (``"GET"`` or ``b"GET"``, ``200`` or
        None when no response came), normalized when a combination is first seen (a
        method OpenTelemetry does not know is ``_OTHER``); ``error`` the failure's
        ``error.type`` (None: a status below 400 is no error).
        """
        key = (address, method, status, error)
        found = self._calls.get(key)
        if found is None:
            found = _client_call_tags(address, method, status, error, self.parent)
            if len(self._calls) < MAX_CACHED_TAGS:
                self._calls[key] = found
        return found

    def tagged(self, key: str, value: str) -> Mapping[str, str]:
        """Return this unit's tags and one more (``component``, ``cache.alias``...).

        ``value`` must already be bounded (a component, an alias, a capped template name).
        """
        found = self._tagged.get((key, value))
        if found is None:
            found = {**self.unit, key: value}
            if len(self._tagged) < MAX_CACHED_TAGS:
                self._tagged[key, value] = found
        return found

    def database(self, namespace: str) -> Mapping[str, str]:
        """Return the tags of this unit's per-unit database metrics of one ``db.namespace``."""
        found = self._databases.get(namespace)
        if found is None:
            found = {**self.unit, DB_NAMESPACE: bounded(namespace)}
            if len(self._databases) < MAX_CACHED_TAGS:
                self._databases[namespace] = found
        return found

    def published(self, task: str) -> Mapping[str, str]:
        """Return the tags of ``celery.task.published`` for ``task`` sent by this unit.

        A task's own name stands for itself (one task publishing another keeps only the
        name of the one it sent: a tag key holds one value).
        """
        found = self._published.get(task)
        if found is None:
            found = {**self.unit, TASK_NAME: task}
            if len(self._published) < MAX_CACHED_TAGS:
                self._published[task] = found
        return found


def _client_call_tags(
    address: tuple[str, str],
    method: object,
    status: object,
    error: str | None,
    parent: Mapping[str, str],
) -> Mapping[str, str]:
    text = method.decode("ascii", "replace") if isinstance(method, bytes) else str(method)
    tags = {SERVER_ADDRESS: address[0], SERVER_PORT: address[1], METHOD: request_method(text)}
    code = None if status is None else str(status)[:3]
    if code is not None:
        tags[STATUS] = code
    if error is not None:
        tags[ERROR_TYPE] = error
    elif code is not None and code >= "400":
        tags[ERROR_TYPE] = code  # OpenTelemetry: a 4xx or 5xx fails a client call
    tags.update(parent)
    return tags


class RequestTags:
    """The tags of one kind of request: for the request timer, the view timer, the error."""

    __slots__ = ("db", "error", "request", "view")

    def __init__(
        self,
        request: Mapping[str, str],
        view: Mapping[str, str],
        error: Mapping[str, str] | None,
        db: UnitTags,
    ) -> None:
        self.request = request
        self.view = view
        self.error = error
        self.db = db

    @classmethod
    def build(
        cls, route: UnitTags, method: str, status: str | None, error: str | None, view_failed: bool
    ) -> RequestTags:
        """Return the tags for a request to ``route`` that ended with ``status``/``error``."""
        view = {**route.unit, METHOD: method}
        request = dict(view)
        if status is not None:
            request[STATUS] = status
        if error is None:
            if status is not None and status.startswith("5"):
                request[ERROR_TYPE] = status  # a server error without an exception
            return cls(request, view, None, route)
        request[ERROR_TYPE] = error
        if view_failed:
            view = {**view, ERROR_TYPE: error}
        return cls(request, view, {**route.unit, ERROR_TYPE: error}, route)
