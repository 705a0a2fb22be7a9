"""Per-request cost of metrics middleware in Django: one mode, in-process WSGI calls.

A view doing two ORM queries on SQLite is called through Django's WSGI handler (no
network), so the figure is what the middleware and DB hooks add to Django itself.

Usage: python bench/django_request_overhead.py MODE [N] [REPEATS]
MODE:  bare | zibrato | prometheus (django-prometheus) | otel (OpenTelemetry Django)

The zibrato mode runs the middleware (request and view timers), the DB hooks and model
signals, publishing to a real broker subprocess with a subscriber that drains every level
(bench/_zibrato_sink.py), so the publisher thread's work is included. Prints one line:
``MODE: MEDIAN us/request (min MIN, N requests x REPEATS)``. Compare modes with
bench/django_compare.py, which interleaves runs of every mode.
"""

from __future__ import annotations

import gc
import io
import os
import statistics
import sys
import tempfile
import time
from typing import Any

MODES = ("bare", "zibrato", "prometheus", "otel")
WARMUP = 300


def configure(mode: str) -> Any:
    """Configure Django for ``mode``; return a stop function for what it started."""
    import django
    from django.conf import settings

    apps = ["django.contrib.contenttypes", "django.contrib.auth"]
    middleware: list[str] = []
    engine = "django.db.backends.sqlite3"
    extra: dict[str, Any] = {}
    stop = lambda: None  # noqa: E731
    if mode == "prometheus":
        apps.append("django_prometheus")
        middleware = [
            "django_prometheus.middleware.PrometheusBeforeMiddleware",
            "django_prometheus.middleware.PrometheusAfterMiddleware",
        ]
        engine = "django_prometheus.db.backends.sqlite3"
    elif mode == "zibrato":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import _zibrato_sink

        publish, stop = _zibrato_sink.start()
        apps.append("zibrato_django")
        middleware = ["zibrato_django.middleware.ZibratoMiddleware"]
        extra["ZIBRATO"] = {"PUBLISH": publish}
    db_path = os.path.join(tempfile.gettempdir(), f"zibrato_bench_{mode}_{os.getpid()}.sqlite3")
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=apps,
        MIDDLEWARE=middleware,
        DATABASES={"default": {"ENGINE": engine, "NAME": db_path, "CONN_MAX_AGE": None}},
        USE_TZ=True,
        **extra,
    )
    django.setup()
    if mode == "otel":
        from opentelemetry import metrics
        from opentelemetry.instrumentation.django import DjangoInstrumentor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        DjangoInstrumentor().instrument()

    def finish() -> None:
        stop()
        if os.path.exists(db_path):
            os.remove(db_path)

    return finish


def view(request: Any, pk: int) -> Any:
    from django.contrib.auth.models import User
    from django.http import HttpResponse

    count = User.objects.count()
    first = User.objects.filter(username="u1").first()
    return HttpResponse(f"{count} {first}")


urlpatterns: list[Any] = []


def environ(i: int) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": f"/items/{i % 50}/",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }


def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
    if not status.startswith("200"):
        raise AssertionError(status)


def measure(
    mode: str, n: int, repeats: int, flush_every: int = 0, *, steady: bool = False
) -> list[float]:
    """Return CPU µs per request for each of ``repeats`` runs of ``n`` requests.

    CPU time of the whole process (every thread: Zibrato's publisher, OpenTelemetry's
    reader), which other processes on a shared machine disturb less than wall time.
    ``flush_every``: in the zibrato mode, send a batch after every that many requests (the
    caller switched the publisher's own timer off), so that batches do not depend on time.
    ``steady``: after the warm-up, collect and freeze what exists (``gc.freeze``), so that
    no full collection of the warm heap, whose moment depends on the threads' interleaving,
    falls in one run and not in another.
    """
    from django.contrib.auth.models import User
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.urls import path

    urlpatterns.append(path("items/<int:pk>/", view))
    call_command("migrate", verbosity=0, run_syncdb=True)
    User.objects.create(username="u1")
    app = WSGIHandler()
    batch = None
    if mode == "zibrato" and flush_every:
        from zibrato_django import zibrato

        batch = flush_every
    for i in range(WARMUP):
        b"".join(app(environ(i), start_response))
    if steady:
        gc.collect()
        gc.freeze()
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        for i in range(n):
            b"".join(app(environ(i), start_response))
            if batch is not None and i % batch == batch - 1:
                zibrato.flush(timeout=5)
        samples.append((time.process_time() - started) / n * 1e6)
    if mode == "zibrato":
        from zibrato_django import zibrato

        zibrato.flush(timeout=5)
        dropped = zibrato.stats()["dropped"]
        if dropped:
            print(f"{mode}: dropped {dropped}", file=sys.stderr)
    return samples


def main(argv: list[str]) -> None:
    mode = argv[1] if len(argv) > 1 else ""
    if mode not in MODES:
        raise SystemExit(f"usage: {argv[0]} {'|'.join(MODES)} [N] [REPEATS]")
    n = int(argv[2]) if len(argv) > 2 else 3000
    repeats = int(argv[3]) if len(argv) > 3 else 7
    finish = configure(mode)
    try:
        samples = measure(mode, n, repeats)
    finally:
        finish()
    print(
        f"{mode}: {statistics.median(samples):.1f} us/request "
        f"(min {min(samples):.1f}, {n} requests x {repeats})",
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv)
