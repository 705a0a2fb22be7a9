"""The Flask extension: ``Zibrato(app)`` or ``Zibrato()`` then ``init_app(app)``."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from flask import Flask, appcontext_pushed, got_request_exception

from zibrato.client import Zibrato as Client
from zibrato.framework import celery, http_client, statements
from zibrato.framework import settings as kit
from zibrato.framework.lazy import LazyZibrato
from zibrato.framework.schema import TagCache
from zibrato.framework.settings import Settings
from zibrato.framework.time_spent import ALL_ON, Switches
from zibrato.framework.units import RequestRecorder, current_unit
from zibrato_flask import clients, database, templates
from zibrato_flask.cli import zibrato_command
from zibrato_flask.request_metrics import note_unhandled, request_timer, view_timer
from zibrato_flask.settings import DEFAULT_SETTINGS, read_app_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

EXTENSION_KEY = "zibrato"


class AppState:
    """One app's Zibrato state, kept in ``app.extensions["zibrato"]``."""

    def __init__(
        self, app: Flask, settings: Settings, plain_engines: database.PlainEngines
    ) -> None:
        self.settings = settings
        self.exclude = settings.exclude
        self.switches = switches_of(settings)
        self.tags = TagCache()
        # This app's client and buffers once made; None again when the process's
        # publishers are closed (clients.close_all), so that the next request makes new.
        self.current_recorder: RequestRecorder | None = None
        clients.on_close(self)
        # Flask-SQLAlchemy keeps its engines per app, and we count those we have seen.
        self._extensions = app.extensions
        self._app_ref = weakref.ref(app)
        self._engines_seen = 0
        # The app's default db.namespace: Flask-SQLAlchemy's default bind, else the first
        # engine its extension instruments (None: no database, no per-request DB metrics).
        # An attribute kept up to date, since every request reads it.
        self._bind_namespace: str | None = None
        self._plain_engines = plain_engines
        self.db_namespace: str | None = plain_engines.first_namespace
        plain_engines.on_add(self)

    def recorder(self) -> RequestRecorder:
        """Return this app's client and its buffers (the process's shared publisher)."""
        recorder = self.current_recorder
        if recorder is None:
            recorder = RequestRecorder(
                clients.client_for(self.settings),
                tags=self.tags,
                request_level=self.settings.request_level,
                db_level=self.settings.db_level,
                namespace=self.db_namespace,
                breakdown=self.switches.breakdown,
            )
            self.current_recorder = recorder
        return recorder

    def update_db_namespace(self) -> None:
        """Find where a request without queries records 0 again (None: no database)."""
        self.db_namespace = self._bind_namespace or self._plain_engines.first_namespace
        if self.current_recorder is not None:
            self.current_recorder.namespace = self.db_namespace

    def forget_client(self) -> None:
        """Drop the client, closed by ``clients.close_all``: the next use makes a new one."""
        self.current_recorder = None

    def client(self) -> Client:
        """Return this app's client (the process's shared publisher, this app's level)."""
        return self.recorder().client

    def check_engines(self) -> None:
        """Instrument Flask-SQLAlchemy engines (every bind) not seen yet; cheap when none."""
        app = self._app_ref()
        if app is None or "sqlalchemy" not in self._extensions:
            return
        engines = database.flask_sqlalchemy_engines(self._extensions, app)
        if not engines or len(engines) == self._engines_seen:  # none: not in app's context
            return
        namespaces = {}
        for bind_key, engine in list(engines.items()):
            namespaces[bind_key] = database.namespace_of(engine, bind_key)
            database.instrument(engine, namespaces[bind_key], self.client)
        self._engines_seen = len(engines)
        # The default bind (key None), else the first bind configured.
        self._bind_namespace = namespaces.get(None) or next(iter(namespaces.values()), None)
        self.update_db_namespace()


def switches_of(settings: Settings) -> Switches:
    """Return which parts of where the time goes an app's settings measure."""
    found = Switches(
        breakdown=settings.switch(kit.BREAKDOWN),
        http_client=settings.switch(kit.HTTP_CLIENT),
        cache=False,  # Django's cache only
        templates=settings.switch(kit.TEMPLATES),
        statements=settings.switch(kit.STATEMENTS),
    )
    return found if found != Switches(cache=False) else ALL_ON


class Zibrato(LazyZibrato):
    """Request, view and database metrics for Flask apps; also a client for your own code.

    >>> zibrato = Zibrato()                        # doctest: +SKIP
    >>> @zibrato.time_me(name="report")            # fine before init_app (app factories)
    ... def report(): ...
    >>> def create_app():
    ...     app = Flask(__name__)
    ...     zibrato.init_app(app)                  # or Zibrato(app)
    ...     return app

    The extension records its own metrics (``zibrato.incr(...)``) with the settings of
    the first app it was initialised with (before that, with the defaults). Every app
    with the same ``ZIBRATO_PUBLISH``, ``ZIBRATO_SOURCE`` and ``ZIBRATO_TAGS`` shares the
    process's one publisher.
    """

    def __init__(self, app: Flask | None = None) -> None:
        super().__init__(_ExtensionSettings())
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<zibrato_flask.Zibrato {'started' if self.started else 'not started'}>"

    def init_app(self, app: Flask) -> None:
        """Instrument ``app``: read and check its ``ZIBRATO_*`` config, install the hooks.

        Raises :class:`~zibrato.errors.ConfigError` (one line: which key, what is allowed)
        for a setting that cannot work, and ``RuntimeError`` if ``app`` already has it.
        A misspelled key is logged with the likely intended name.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"zibrato_flask: {app!r} is already instrumented; call Zibrato(app) or "
                "zibrato.init_app(app) once per app"
            )
        settings = read_app_settings(app.config)
        state = AppState(app, settings, self._settings.plain_engines)
        app.extensions[EXTENSION_KEY] = state
        app.wsgi_app = request_timer(app.wsgi_app, state)  # type: ignore[method-assign,assignment]
        app.dispatch_request = view_timer(app.dispatch_request)  # type: ignore[method-assign]
        got_request_exception.connect(note_unhandled, sender=app)
        _check_engines_on_first_context(app, state)
        app.cli.add_command(zibrato_command)
        self._settings.adopt(self, settings)
        self._install_components(app, state)
        if settings.celery is not None:
            self._measure_tasks(settings.celery, state)

    def _install_components(self, app: Flask, state: AppState) -> None:
        """Install what measures where the time goes: each part ``app``'s settings want."""
        if state.switches.http_client:
            http_client.install(outside=self._outside_client)
        if state.switches.templates:
            templates.connect(app)
        statements.SAMPLER.code.add_packages(state.settings.app_packages)

    def _outside_client(self) -> Client | None:
        """This extension, for outgoing calls made outside requests and tasks (None: not
        measured)."""
        settings = self._settings.settings or DEFAULT_SETTINGS
        return self if settings.switch(kit.HTTP_CLIENT) else None

    def instrument_engine(self, engine: Engine, *, namespace: str | None = None) -> None:
        """Count ``engine``'s queries per request (``db.namespace``: given, else its database).

        Flask-SQLAlchemy's engines are instrumented without this call. The first engine
        given here is the default ``db.namespace`` of this extension's apps that have no
        Flask-SQLAlchemy: where their requests without queries record 0.
        """
        namespace = namespace or database.namespace_of(engine)
        database.instrument(engine, namespace, lambda: self)
        self._settings.plain_engines.add(namespace)

    def _measure_tasks(self, spec: object, state: AppState) -> None:
        """Measure the tasks of ``ZIBRATO_CELERY`` (checked by init_app) with this app's
        client and database: queries inside a task count per task (docs/celery.md)."""
        celery_app = celery.load_app(spec)
        celery.instrument(
            celery_app,
            client=state.client,
            db_level=state.settings.db_level,
            namespace=lambda: state.db_namespace,
            breakdown=state.switches.breakdown,
        )

    # -- lifecycle -----------------------------------------------------------------------
    def reset(self, linger: float | None = None) -> None:
        """Close the process's Flask publishers; the next metric reads the settings again."""
        self._settings.unbind(self)
        clients.close_all(linger)

    def close(self, linger: float | None = None) -> None:
        """Send what is pending (waiting at most ``linger`` s) and close the publishers."""
        self.reset(linger)


class _ExtensionSettings:
    """The extension's client settings: its first app's, or the defaults before that;
    and the plain engines it instrumented.

    Kept in the one attribute a ``LazyZibrato`` keeps across a reset.
    """

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.plain_engines = database.PlainEngines()
        self.lock = threading.Lock()

    def __call__(self) -> dict[str, Any]:
        client = clients.client_for(self.settings or DEFAULT_SETTINGS)
        return {"publisher": client.publisher, "level": client.threshold}

    def adopt(self, extension: Zibrato, settings: Settings) -> None:
        """Take the first app's settings; a client started with the defaults starts again."""
        with self.lock:
            if self.settings is not None:
                return
            self.settings = settings
        if extension.started and extension.publisher is not clients.client_for(settings).publisher:
            self.unbind(extension)

    def unbind(self, extension: Zibrato) -> None:
        """Forget the client (not its publisher, which the process shares)."""
        state = extension.__dict__
        state.clear()
        state["_settings"] = self


def _check_engines_on_first_context(app: Flask, state: AppState) -> None:
    """Find Flask-SQLAlchemy's engines now, and again when the app's contexts open.

    ``db.init_app(app)`` may come after ``zibrato.init_app(app)`` in a factory, and a
    factory may push an app context before either; so the engines are looked for at each
    app context until Flask-SQLAlchemy is there or the app serves requests. From then on,
    new binds are found after each request (:meth:`AppState.check_engines`).
    """
    state.check_engines()

    def on_context(sender: Flask, **extra: Any) -> None:
        state.check_engines()
        if "sqlalchemy" in sender.extensions or current_unit.get() is not None:
            appcontext_pushed.disconnect(on_context)  # from every sender: forgotten

    appcontext_pushed.connect(on_context, sender=app, weak=False)
