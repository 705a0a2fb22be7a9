"""Count SQLAlchemy queries per request through the engine's own events.

Each instrumented engine gets three listeners (``before_cursor_execute``,
``after_cursor_execute`` and ``handle_error``, SQLAlchemy's documented hooks; nothing is
swapped or patched). Every query then:

* adds to the tally of the unit of work it runs in: the request being served (recorded
  with its ``http.route`` at teardown), a Celery task (recorded with its name when it
  ends), or else the app context (a ``flask`` CLI command,
  a script's ``with app.app_context()``: recorded without a route when the context ends);
* records its own duration as ``db.client.operation.duration`` at level debug;
* inside a request or a task, is a ``db`` part of the unit's time breakdown, and a
  statement that repeats in a request is located (:mod:`zibrato.framework.statements`).

Flask-SQLAlchemy's engines (every bind) are found in ``app.extensions["sqlalchemy"]``,
whichever of ``db.init_app(app)`` and ``zibrato.init_app(app)`` runs first; an engine of
your own takes one call, ``zibrato.instrument_engine(engine)``. SQLAlchemy is imported
only when an engine is instrumented, and Flask-SQLAlchemy never.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from flask import (
    Flask,
    appcontext_tearing_down,
    current_app,
    g,
    has_app_context,
    has_request_context,
)

from zibrato.client import Zibrato
from zibrato.framework.operations import OperationRecorder
from zibrato.framework.queries import QueryTally
from zibrato.framework.schema import TagCache
from zibrato.framework.units import current_unit
from zibrato_flask.request_metrics import HOOK_FAILED, InstrumentedApp

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

G_KEY = "_zibrato"
_STARTS = "zibrato_query_starts"

# Each engine is instrumented once, whichever app or call asks first.
_instrumented: weakref.WeakKeyDictionary[Engine, EngineHooks] = weakref.WeakKeyDictionary()


class EngineNamespaces(Protocol):
    """Told when the first plain engine is added (``AppState.update_db_namespace``)."""

    def update_db_namespace(self) -> None: ...


def namespace_of(engine: Engine, bind_key: str | None = None) -> str:
    """Return the ``db.namespace`` of an engine: its bind key, else its database's name."""
    if bind_key is not None:
        return bind_key
    database = engine.url.database
    if not database:
        return engine.url.get_backend_name()
    # A file database (SQLite) is named by its file, not by where the file lives.
    return os.path.basename(database) if engine.url.get_backend_name() == "sqlite" else database


def instrument(engine: Engine, namespace: str, client: Callable[[], Zibrato]) -> bool:
    """Listen to ``engine``'s queries; return False if it was already instrumented."""
    from sqlalchemy import event  # only now: SQLAlchemy is optional

    if engine in _instrumented:
        return False
    hooks = EngineHooks(namespace, client)
    _instrumented[engine] = hooks
    event.listen(engine, "before_cursor_execute", hooks.before_cursor_execute)
    event.listen(engine, "after_cursor_execute", hooks.after_cursor_execute)
    event.listen(engine, "handle_error", hooks.handle_error)
    return True


def flask_sqlalchemy_engines(app_extensions: Mapping[str, Any], app: object) -> Mapping[Any, Any]:
    """Return the engines Flask-SQLAlchemy made for ``app``, by bind key (empty if none).

    Through its public ``db.engines``, which reads the current app: so only inside one of
    ``app``'s contexts (pushing one here would run the app's teardown functions); the
    extension looks again at each app context until it finds them.
    """
    db = app_extensions.get("sqlalchemy")
    if db is None or not has_app_context():
        return {}
    if current_app._get_current_object() is not app:  # type: ignore[attr-defined]
        return {}
    engines = getattr(db, "engines", None)
    return engines if isinstance(engines, Mapping) else {}


class PlainEngines:
    """The engines one extension instrumented with ``instrument_engine``: the first one's
    namespace is the default of that extension's apps (told weakly, as apps come and go)."""

    def __init__(self) -> None:
        self.first_namespace: str | None = None
        self._apps: weakref.WeakSet[EngineNamespaces] = weakref.WeakSet()

    def on_add(self, app_state: EngineNamespaces) -> None:
        """Call ``app_state.update_db_namespace()`` when the first engine is added."""
        self._apps.add(app_state)

    def add(self, namespace: str) -> None:
        """Note an instrumented engine's namespace (the first one is the default)."""
        if self.first_namespace is None:
            self.first_namespace = namespace
            for app_state in list(self._apps):
                app_state.update_db_namespace()


class EngineHooks:
    """The listeners of one engine: time each query, add it to its unit of work."""

    def __init__(self, namespace: str, client: Callable[[], Zibrato]) -> None:
        self.namespace = namespace
        self.client = client  # for queries outside any instrumented app
        self.operations = OperationRecorder(TagCache())

    def before_cursor_execute(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        conn.info.setdefault(_STARTS, []).append(perf_counter())

    def after_cursor_execute(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        self.finish(conn, statement)

    def handle_error(self, context: Any) -> None:
        if context.connection is not None and context.statement is not None:
            self.finish(context.connection, context.statement)

    def finish(self, conn: Any, statement: str) -> None:
        """Count one query that ended (well or not); never raise into the query."""
        end = perf_counter()
        starts = conn.info.get(_STARTS)
        if not starts:
            return
        seconds = end - starts.pop()
        client = None
        try:
            state = current_unit.get()
            if state is not None:
                state.add_query(self.namespace, statement, seconds, end)
            else:
                tally, client = context_unit()
                if tally is not None:
                    tally.add(self.namespace, statement, seconds)
            client = client or self.client()
            self.operations.record(client, self.namespace, statement, seconds)
        except Exception as failure:
            (client or self.client()).publisher.reject(
                HOOK_FAILED, f"query not counted: {failure!r}"
            )


def context_unit() -> tuple[QueryTally | None, Zibrato | None]:
    """Return the tally of the app context (not a request) a query runs in, and its client."""
    if has_request_context():
        # A request without state: an excluded path, a request context pushed by hand,
        # a streamed body running after its request was recorded. Nothing to count into.
        return None, None
    if not has_app_context():
        return None, None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    app_state: InstrumentedApp | None = app.extensions.get("zibrato")
    if app_state is None:  # an app without Zibrato shares this engine
        return None, None
    globals_ = g._get_current_object()
    tally: QueryTally | None = globals_.get(G_KEY)
    if tally is None:
        tally = QueryTally()
        setattr(globals_, G_KEY, tally)
        record_when_contexts_end(app)
    return tally, app_state.client()


def record_when_contexts_end(app: Flask) -> None:
    """Record the tallies of ``app``'s contexts when they end, from now on.

    Connected only once an app context (not a request) has run a query, so an app that
    queries only inside requests pays nothing per request for it.
    """
    appcontext_tearing_down.connect(record_context, sender=app)


def record_context(sender: Flask, exc: BaseException | None = None, **extra: Any) -> None:
    """Record the queries of an app context that was not a request (``appcontext_tearing_down``)."""
    tally: QueryTally | None = g._get_current_object().pop(G_KEY, None)
    app_state: InstrumentedApp | None = sender.extensions.get("zibrato")
    if tally is None or app_state is None:
        return
    recorder = app_state.recorder()
    try:
        recorder.record_unit(tally)
    except Exception as failure:
        recorder.publisher.reject(HOOK_FAILED, f"queries not recorded: {failure!r}")
