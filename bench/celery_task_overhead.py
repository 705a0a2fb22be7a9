"""CPU per Celery task: bare, Zibrato's ``instrument(app)``, OpenTelemetry's instrumentation.

A task that runs no query (it returns at once) is run through Celery's own tracer — the
function a worker's pool process calls per task, with the request a worker hands it
(Zibrato's queue stamp included) — in batches that alternate between the configurations
in one process, so that all three see the same machine load. Each batch is charged the CPU
time of the calling thread (what the issue's budget is about: at most 10 us per task) and,
apart, that of the instrumentation's own background thread (Zibrato's publisher, which
checks, encodes and sends to a real broker with a draining subscriber; OpenTelemetry's
batch span processor, exporting to an exporter that discards the spans: a real one costs
more), read after a pause that lets it finish the batch's work.

* bare: no receiver connected (Celery then skips its signals entirely);
* celery signals: a receiver that does nothing on ``task_prerun`` and ``task_postrun``:
  what Celery's own dispatch of the two signals costs, which every signal-based
  instrumentation pays (Zibrato's and OpenTelemetry's);
* zibrato: ``zibrato.celery.instrument(app)``: the task's duration, outcome, queue wait;
* opentelemetry: ``CeleryInstrumentor().instrument()`` with the SDK's tracer provider.

Usage: python bench/celery_task_overhead.py [PAIRS] [BATCH]   (needs `make bench`'s extras)
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _zibrato_sink  # noqa: E402
from celery import Celery, signals  # noqa: E402
from celery.app.trace import build_tracer  # noqa: E402

from zibrato import Zibrato  # noqa: E402
from zibrato.framework import celery as zibrato_celery  # noqa: E402

DRAIN_PAUSE = 0.08  # longer than the publisher's 50 ms interval and the span processor's wake


def thread_clock(name: str) -> Callable[[], float]:
    """Return a function reading the CPU time of the running thread called ``name``."""
    found = [t for t in threading.enumerate() if t.name == name]
    if not found:
        return lambda: 0.0
    ident = found[0].ident
    assert ident is not None
    clock = time.pthread_getcpuclockid(ident)
    return lambda: time.clock_gettime(clock)


def make_app() -> tuple[Celery, Any]:
    app = Celery("bench", broker="memory://")
    app.conf.task_ignore_result = True

    @app.task(name="bench.noop")
    def noop() -> None:
        return None

    app.finalize()
    return app, app.tasks[noop.name]  # the task itself, as a worker's pool process has it


def requests_for(task: Any, count: int) -> list[dict[str, Any]]:
    """The requests a worker hands its pool for ``count`` tasks (stamped as Zibrato does)."""
    now = time.time()
    return [
        {
            "id": str(uuid.uuid4()),
            "task": task.name,
            "delivery_info": {"exchange": "", "routing_key": "celery", "redelivered": False},
            "is_eager": False,
            zibrato_celery.DUE_HEADER: now,
        }
        for _ in range(count)
    ]


class OpenTelemetry:
    def __init__(self) -> None:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Discard(SpanExporter):
            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        self.provider = TracerProvider()
        self.provider.add_span_processor(BatchSpanProcessor(Discard()))
        self.instrumentor = CeleryInstrumentor()

    def on(self) -> None:
        self.instrumentor.instrument(tracer_provider=self.provider)

    def off(self) -> None:
        self.instrumentor.uninstrument()


def empty_receiver(**named: Any) -> None:
    """Does nothing: what Celery's dispatch of a task's two signals costs by itself."""


def connect_empty_receivers() -> None:
    signals.task_prerun.connect(empty_receiver, weak=False)
    signals.task_postrun.connect(empty_receiver, weak=False)


def disconnect_empty_receivers() -> None:
    signals.task_prerun.disconnect(empty_receiver)
    signals.task_postrun.disconnect(empty_receiver)


def run_batch(app: Celery, task: Any, batch: int) -> float:
    """Run ``batch`` tasks through a fresh tracer; return the calling thread's CPU seconds."""
    trace = build_tracer(task.name, task, app=app, hostname="bench@localhost")
    requests = requests_for(task, batch)
    start = time.thread_time()
    for request in requests:
        trace(request["id"], (), {}, request)
    return time.thread_time() - start


def main(argv: list[str]) -> None:
    pairs = int(argv[1]) if len(argv) > 1 else 30
    batch = int(argv[2]) if len(argv) > 2 else 2000
    publish, stop = _zibrato_sink.start()
    try:
        app, task = make_app()
        client = Zibrato(publish=publish)
        otel = OpenTelemetry()
        # Warm up each: the client's thread and subscriptions, the instrumentor's imports.
        zibrato_celery.instrument(app, client=client)
        run_batch(app, task, 200)
        client.flush(timeout=5)
        zibrato_celery.uninstrument(app)
        otel.on()
        run_batch(app, task, 200)
        otel.off()
        publisher_cpu = thread_clock("zibrato-publisher")
        span_cpu = thread_clock("OtelBatchSpanRecordProcessor")
        calling: dict[str, list[float]] = {
            "bare": [],
            "celery signals": [],
            "zibrato": [],
            "opentelemetry": [],
        }
        background: dict[str, list[float]] = {"zibrato": [], "opentelemetry": []}
        for _ in range(pairs):
            calling["bare"].append(run_batch(app, task, batch) / batch)

            connect_empty_receivers()
            calling["celery signals"].append(run_batch(app, task, batch) / batch)
            disconnect_empty_receivers()

            zibrato_celery.instrument(app, client=client)
            before = publisher_cpu()
            calling["zibrato"].append(run_batch(app, task, batch) / batch)
            time.sleep(DRAIN_PAUSE)
            background["zibrato"].append((publisher_cpu() - before) / batch)
            zibrato_celery.uninstrument(app)

            otel.on()
            before = span_cpu()
            calling["opentelemetry"].append(run_batch(app, task, batch) / batch)
            time.sleep(DRAIN_PAUSE)
            background["opentelemetry"].append((span_cpu() - before) / batch)
            otel.off()
        stats = client.stats()
        client.close()
    finally:
        stop()
    bare = statistics.median(calling["bare"])
    signal_cost = statistics.median(calling["celery signals"])
    print(f"celery tracer, {pairs} alternating batches of {batch} tasks (medians, CPU per task)")
    for name, values in calling.items():
        median = statistics.median(values)
        extra = "" if name == "bare" else f"  (+{(median - bare) * 1e6:5.2f} us over bare)"
        if name == "zibrato":
            extra += f", of which Zibrato's own {(median - signal_cost) * 1e6:5.2f} us"
        behind = background.get(name)
        thread = f"; background thread {statistics.median(behind) * 1e6:5.2f} us" if behind else ""
        print(f"  {name:14s} calling thread {median * 1e6:6.2f} us{extra}{thread}")
    print(f"  zibrato client: {stats['sent_events']} events sent, dropped {stats['dropped']}")


if __name__ == "__main__":
    main(sys.argv)
