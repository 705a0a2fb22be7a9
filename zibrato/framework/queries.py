"""The queries of one unit of work (a request, a command): counted per namespace, and
each SQL text's runs, from which duplicates and repeated statements are read.

>>> tally = QueryTally()
>>> [tally.add("shop", "SELECT * FROM item WHERE id = ?", 0.001) for _ in range(3)]
[1, 2, 3]
>>> tally.queries, tally.duplicates
(3, 2)
"""

from __future__ import annotations

# Distinct SQL texts remembered per request to spot duplicates; past this, a request that
# runs ever-new statements stops growing memory and its later duplicates go uncounted.
MAX_DISTINCT_STATEMENTS = 10_000


class QueryTally:
    """Count the queries of one unit of work (a request, a command): per namespace, and
    how many repeated a SQL text already run in that unit (the N+1 signal).

    A statement that is not a ``str`` (a driver's composed SQL object) is counted but
    never taken for a duplicate.
    """

    __slots__ = ("_seen", "duplicates", "namespaces", "queries")

    def __init__(self) -> None:
        self.queries = 0
        self.duplicates = 0
        # namespace -> [queries, seconds]
        self.namespaces: dict[str, list[float]] = {}
        self._seen: dict[tuple[str, str], int] = {}  # (namespace, SQL) -> times it ran

    def add(self, namespace: str, statement: object, seconds: float) -> int:
        """Count one query of ``namespace`` that took ``seconds``; return how many times
        its SQL text has run in this unit now (0: not counted, as a non-``str``)."""
        self.queries += 1
        totals = self.namespaces.get(namespace)
        if totals is None:
            self.namespaces[namespace] = [1, seconds]
        else:
            totals[0] += 1
            totals[1] += seconds
        if type(statement) is not str:
            return 0
        key = (namespace, statement)
        seen = self._seen.get(key)
        if seen is not None:
            self.duplicates += 1
            seen += 1
            self._seen[key] = seen
            return seen
        if len(self._seen) < MAX_DISTINCT_STATEMENTS:
            self._seen[key] = 1
        return 1

    def runs(self, namespace: str, statement: str) -> int:
        """Return how many times ``statement`` ran in this unit (in ``namespace``)."""
        return self._seen.get((namespace, statement), 0)
