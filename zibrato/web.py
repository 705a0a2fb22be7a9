"""What every web framework adapter records, framework-free: one metric schema for all.

The Django and Flask adapters record the same names with the same tags (OpenTelemetry's
semantic conventions), so one dashboard serves both. This module holds those names, the
rules that keep tag values bounded (a route template or ``<unmatched>``, never a raw path;
an unknown HTTP method becomes ``_OTHER``), and the per-request database accounting
(queries, time and duplicated SQL text per request), so no adapter writes them twice.

>>> request_method("get"), request_method("BREW")
('GET', '_OTHER')
>>> tally = QueryTally()
>>> for _ in range(3):
...     tally.add("shop", "SELECT * FROM item WHERE id = ?", 0.001)
>>> tally.queries, tally.duplicates
(3, 2)
"""

from __future__ import annotations

from collections.abc import Mapping

from zibrato.client import Zibrato

# -- metric names (DESIGN §4) ----------------------------------------------------------------
REQUEST_DURATION = "http.server.request.duration"
VIEW_DURATION = "http.server.view.duration"
EXCEPTIONS = "http.server.exceptions"
DB_REQUEST_QUERIES = "db.client.request.queries"
DB_REQUEST_DURATION = "db.client.request.duration"
DB_REQUEST_DUPLICATES = "db.client.request.duplicates"
DB_OPERATION_DURATION = "db.client.operation.duration"

# -- their levels ----------------------------------------------------------------------------
REQUEST_LEVEL = "info"
EXCEPTIONS_LEVEL = "error"
DB_OPERATION_LEVEL = "debug"

# -- tag keys --------------------------------------------------------------------------------
ROUTE = "http.route"
METHOD = "http.request.method"
STATUS = "http.response.status_code"
ERROR_TYPE = "error.type"
DB_NAMESPACE = "db.namespace"
DB_OPERATION = "db.operation.name"

# -- bounded tag values ----------------------------------------------------------------------
UNMATCHED_ROUTE = "<unmatched>"
OTHER = "_OTHER"
KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY")
)
KNOWN_OPERATIONS = frozenset(
    (
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "WITH",
        "CREATE", "ALTER", "DROP", "TRUNCATE", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT",
        "RELEASE", "SET", "SHOW", "EXPLAIN", "PRAGMA", "CALL", "EXEC", "EXECUTE", "COPY",
        "VACUUM", "ANALYZE", "GRANT", "REVOKE", "LOCK",
    )
)  # fmt: skip

# Distinct SQL texts remembered per request to spot duplicates; past this, a request that
# runs ever-new statements stops growing memory and its later duplicates go uncounted.
MAX_DISTINCT_STATEMENTS = 10_000


def request_method(method: str) -> str:
    """Return the method as a tag value: a known HTTP method in capitals, else ``_OTHER``."""
    upper = method.upper()
    return upper if upper in KNOWN_METHODS else OTHER


def error_type(exc: BaseException) -> str:
    """Return the ``error.type`` tag value for an exception: its class's qualified name."""
    return type(exc).__qualname__


def operation_name(statement: str) -> str:
    """Return the SQL operation (``SELECT``, ``INSERT``...) of a statement, else ``_OTHER``."""
    words = statement.lstrip(" \t\r\n(").split(None, 1)
    word = words[0].upper() if words else ""
    return word if word in KNOWN_OPERATIONS else OTHER


class QueryTally:
    """Count the queries of one unit of work (a request, a command): per namespace, and
    how many repeated a SQL text already run in that unit (the N+1 signal).

    Framework adapters add every query with :meth:`add` and, when the unit ends, call
    :meth:`record` once.
    """

    __slots__ = ("_seen", "duplicates", "namespaces", "queries")

    def __init__(self) -> None:
        self.queries = 0
        self.duplicates = 0
        # namespace -> [queries, seconds]
        self.namespaces: dict[str, list[float]] = {}
        self._seen: set[tuple[str, str]] = set()

    def add(self, namespace: str, statement: str, seconds: float) -> None:
        """Count one query of ``namespace`` that took ``seconds``."""
        self.queries += 1
        totals = self.namespaces.get(namespace)
        if totals is None:
            self.namespaces[namespace] = [1, seconds]
        else:
            totals[0] += 1
            totals[1] += seconds
        key = (namespace, statement)
        if key in self._seen:
            self.duplicates += 1
        elif len(self._seen) < MAX_DISTINCT_STATEMENTS:
            self._seen.add(key)

    def record(self, client: Zibrato, tags: TagCache, route: str | None) -> None:
        """Record the unit's queries, DB time (per namespace) and duplicates, once."""
        for namespace, (queries, seconds) in self.namespaces.items():
            namespaced = tags.database(route, namespace)
            client.observe(DB_REQUEST_QUERIES, queries, level=REQUEST_LEVEL, tags=namespaced)
            client.timing(DB_REQUEST_DURATION, seconds, level=REQUEST_LEVEL, tags=namespaced)
        client.observe(
            DB_REQUEST_DUPLICATES, self.duplicates, level=REQUEST_LEVEL, tags=tags.route(route)
        )


class TagCache:
    """Tag dictionaries built once per distinct combination and shared by every request.

    A tags mapping handed to a client is read later, on the publisher thread, so it must
    never change afterwards: these never do, and reusing them saves building a dict per
    request. Every tag value here is bounded (routes, methods, statuses, error types,
    namespaces), and the cache stops growing at ``limit`` entries (then builds afresh).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._request: dict[tuple[str, str, str | int | None, str | None, bool], RequestTags] = {}
        self._other: dict[tuple[str | None, ...], Mapping[str, str]] = {}

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
        request's ``error.type`` (or None); the view's timer carries it only when
        ``view_failed`` (the view raised, not a hook after it). No status with an error
        means the exception propagated out of the app: tagged 500, what a server answers.
        """
        key = (route, method, status, error, view_failed)
        found = self._request.get(key)
        if found is None:
            code = str(status)[:3] if status is not None else None if error is None else "500"
            found = RequestTags.build(route, request_method(method), code, error, view_failed)
            if len(self._request) < self.limit:
                self._request[key] = found
        return found

    def route(self, route: str | None) -> Mapping[str, str]:
        """Return ``{http.route: route}`` (no tags outside a request)."""
        return self._cached(("route", route), {} if route is None else {ROUTE: route})

    def database(self, route: str | None, namespace: str) -> Mapping[str, str]:
        """Return the tags of a unit's per-namespace database metrics."""
        tags = {DB_NAMESPACE: namespace}
        if route is not None:
            tags = {ROUTE: route, **tags}
        return self._cached(("database", route, namespace), tags)

    def operation(self, namespace: str, statement: str) -> Mapping[str, str]:
        """Return the tags of one query's operation timer."""
        operation = operation_name(statement)
        return self._cached(
            ("operation", namespace, operation), {DB_NAMESPACE: namespace, DB_OPERATION: operation}
        )

    def _cached(self, key: tuple[str | None, ...], tags: Mapping[str, str]) -> Mapping[str, str]:
        found = self._other.get(key)
        if found is not None:
            return found
        if len(self._other) < self.limit:
            self._other[key] = tags
        return tags


class RequestTags:
    """The tags of one kind of request: for the request timer, the view timer, the error."""

    __slots__ = ("error", "request", "view")

    def __init__(
        self, request: Mapping[str, str], view: Mapping[str, str], error: Mapping[str, str] | None
    ) -> None:
        self.request = request
        self.view = view
        self.error = error

    @classmethod
    def build(
        cls, route: str, method: str, status: str | None, error: str | None, view_failed: bool
    ) -> RequestTags:
        """Return the tags for a request to ``route`` that ended with ``status``/``error``."""
        view = {ROUTE: route, METHOD: method}
        request = dict(view)
        if status is not None:
            request[STATUS] = status
        if error is None:
            return cls(request, view, None)
        request[ERROR_TYPE] = error
        if view_failed:
            view = {**view, ERROR_TYPE: error}
        return cls(request, view, {ROUTE: route, ERROR_TYPE: error})
