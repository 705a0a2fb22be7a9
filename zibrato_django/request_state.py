"""The state of the request being measured, in a ``ContextVar``.

A ``ContextVar`` (not a thread-local) follows the request into async views and into
``sync_to_async`` / ``async_to_sync`` calls, which copy the context: the state object is
shared, so a query made on another thread still lands in its request's tally.
"""

from __future__ import annotations

from contextvars import ContextVar

# Distinct statements remembered per alias and request, for the duplicate count; past
# this, further distinct statements are not remembered (duplicates may be undercounted).
MAX_REMEMBERED_STATEMENTS = 10_000


class AliasTally:
    """Queries of one database alias within one request."""

    __slots__ = ("count", "seconds", "statements", "unremembered")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.statements: set[str] = set()
        self.unremembered = 0

    @property
    def duplicates(self) -> int:
        """Queries whose SQL text (parameters aside) had already run in this request."""
        return self.count - len(self.statements) - self.unremembered


class RequestState:
    """What one request accumulates until the middleware records it."""

    __slots__ = ("aliases", "error_type", "view_end", "view_start")

    def __init__(self) -> None:
        self.aliases: dict[str, AliasTally] = {}
        self.view_start = 0.0
        self.view_end = 0.0
        self.error_type: str | None = None

    def add_query(self, alias: str, sql: object, seconds: float) -> None:
        """Count one query of ``alias`` that took ``seconds``."""
        tally = self.aliases.get(alias)
        if tally is None:
            tally = self.aliases[alias] = AliasTally()
        tally.count += 1
        tally.seconds += seconds
        statements = tally.statements
        if type(sql) is str and (len(statements) < MAX_REMEMBERED_STATEMENTS or sql in statements):
            statements.add(sql)
        else:
            tally.unremembered += 1  # counted, but never taken for a duplicate


current_request: ContextVar[RequestState | None] = ContextVar(
    "zibrato_django_request", default=None
)
