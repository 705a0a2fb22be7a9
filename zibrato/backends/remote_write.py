"""``remote-write``: push every series to a Prometheus remote write 1.0 endpoint.

What a scrape of the prometheus backend's ``/metrics`` would store, pushed instead: the
same names and labels (:mod:`zibrato.backends.prometheus`: counters ``NAME_total``,
timers ``NAME_seconds`` histograms, distributions histograms, gauges and sets by their
name, tags as labels, the source as ``source``), plus the labels a scrape adds, ``job``
(default ``zibrato``) and ``instance`` (default ``HOST:PID``, one per backend process, so
that the running totals of two backends never mix). A tag called ``job`` or ``instance``
becomes ``exported_job`` / ``exported_instance``, as Prometheus renames it on a scrape.

Every flush sends every series the backend holds, stamped with the flush time in
milliseconds, as a scrape at that moment would: counters' running totals, gauges' last
values, histograms' cumulative ``_bucket{le}``, ``_sum`` and ``_count``
(:mod:`zibrato.backends.toolkit.cumulative`: integer bucket counts, runs, resets). A
series not updated for ``series_ttl`` seconds is no longer sent (queries see it go
stale); if it comes back, its counter starts again from zero, which Prometheus reads
as a counter reset.

The wire format is remote write 1.0: a ``WriteRequest`` (``zibrato/backends/prompb``),
snappy block-compressed, at most 2 000 samples per request, each of one flush (so that
the retry of a flush that Prometheus stored but answered too late, refused whole as out of
order, holds no newer sample), labels sorted by name.
Delivery is :mod:`zibrato.backends.toolkit.push`, with the spec's rule: 5xx and 429 are
retried (with backoff, honouring ``Retry-After``, within the flush interval; then kept
for the next flush), every other 4xx is never retried: its samples are dropped and
counted (``rejected_samples``; Prometheus answers 400 for an out-of-order sample and
then stores nothing of that request). Samples wait in a buffer of ``max_buffer`` (the
oldest dropped beyond, counted in ``dropped_samples``). Credentials: basic auth
(``username``, ``password`` or ``$ZIBRATO_REMOTE_WRITE_PASSWORD``) or a bearer token
(``bearer_token`` or ``$ZIBRATO_REMOTE_WRITE_TOKEN``), plus any ``headers`` (Mimir's
``X-Scope-OrgID``); none of them ever appears in logs, errors or the repr.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Unpack

import requests

from zibrato.aggregation import Rollup, Series, SeriesType
from zibrato.backends.base import BackendOptions, Option
from zibrato.backends.prometheus import (
    BUCKET_OPTIONS,
    DEFAULT_BUCKETS,
    DEFAULT_DISTRIBUTION_BUCKETS,
    MetricNameConflict,
    _claimed_names,
    bucket_list,
    format_number,
    metric_name,
    series_labels,
)
from zibrato.backends.toolkit.cumulative import DEFAULT_TTL, CumulativeStore, Run
from zibrato.backends.toolkit.push import (
    DEFAULT_TIMEOUT,
    Pusher,
    PushingBackend,
    StatusPolicy,
    check_url,
    parse_headers,
    retry_server_errors,
)

PASSWORD_ENV = "ZIBRATO_REMOTE_WRITE_PASSWORD"
TOKEN_ENV = "ZIBRATO_REMOTE_WRITE_TOKEN"
DEFAULT_JOB = "zibrato"
DEFAULT_MAX_BUFFER = 100_000
MAX_PER_REQUEST = 2_000  # samples: Prometheus' own max_samples_per_send
EXTRA = "install the remote-write extra (pip install '.[remote-write]' in a Zibrato checkout)"
_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "zibrato-remote-write",
}
_RENAMED = {"job": "exported_job", "instance": "exported_instance"}

Labels = tuple[tuple[str, str], ...]
# (labels with __name__, value, timestamp in ms)
Sample = tuple[Labels, float, int]


def _codec() -> tuple[Any, Callable[[bytes], Any]]:
    """Return the WriteRequest class and snappy's block compressor, or explain the extra."""
    try:
        import cramjam

        from zibrato.backends.prompb.remote_write_pb2 import WriteRequest
    except ImportError as exc:
        raise ValueError(f"needs protobuf and cramjam ({exc.name} is missing): {EXTRA}") from None
    return WriteRequest, cramjam.snappy.compress_raw


def _family_type(series_type: str) -> str:
    if series_type == SeriesType.COUNTER:
        return "counter"
    if series_type in (SeriesType.GAUGE, SeriesType.SET):
        return "gauge"
    return "histogram"


class RemoteWriteBackend(PushingBackend):
    """Push every series to a Prometheus remote write endpoint at each flush.

    >>> RemoteWriteBackend(connect="tcp://127.0.0.1:5551",
    ...                    url="http://127.0.0.1:9090/api/v1/write").start()  # doctest: +SKIP
    """

    kind = "remote-write"
    options: ClassVar[tuple[Option, ...]] = (
        Option("url", "the remote write URL, e.g. http://127.0.0.1:9090/api/v1/write (required)"),
        Option("username", "basic-auth user"),
        Option("password", f"basic-auth password (default: ${PASSWORD_ENV}, which is safer)"),
        Option("bearer-token", f"bearer token (default: ${TOKEN_ENV}, which is safer)"),
        Option("headers", "more HTTP headers, KEY=VALUE,... (X-Scope-OrgID=TENANT for Mimir)"),
        Option("job", "the job label (default: %(default)s)", default=DEFAULT_JOB),
        Option("instance", "the instance label (default: HOST:PID of this backend)"),
        *BUCKET_OPTIONS,
        Option("timeout", "seconds per request (default: %(default)s)", float, DEFAULT_TIMEOUT),
        Option(
            "max-buffer",
            "samples kept while the endpoint is unreachable; the oldest are dropped "
            "beyond (default: %(default)s)",
            int,
            DEFAULT_MAX_BUFFER,
        ),
        Option(
            "series-ttl",
            "seconds a series is still sent without an update (default: %(default)s)",
            float,
            DEFAULT_TTL,
        ),
    )

    def __init__(
        self,
        *,
        url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        bearer_token: str | None = None,
        headers: str | Mapping[str, str] | None = None,
        job: str = DEFAULT_JOB,
        instance: str | None = None,
        buckets: str | Iterable[float] = DEFAULT_BUCKETS,
        distribution_buckets: str | Iterable[float] = DEFAULT_DISTRIBUTION_BUCKETS,
        timeout: float = DEFAULT_TIMEOUT,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        series_ttl: float = DEFAULT_TTL,
        session: requests.Session | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], bool] | None = None,
        **common: Unpack[BackendOptions],
    ) -> None:
        super().__init__(**common)
        self._write_request, self._compress = _codec()
        if not url:
            raise ValueError(
                "needs the remote write endpoint: the url option (--url; --remote-write-url "
                "with zibrato run)"
            )
        self.url = check_url(url, what="remote write url")
        if series_ttl <= 0:
            raise ValueError("series_ttl must be positive")
        if username and bearer_token:
            raise ValueError("use basic auth (username, password) or a bearer token, not both")
        if password and not username:
            raise ValueError("a password needs the username option")
        if username:  # the variables are read only for the kind of auth asked for
            password = password or os.environ.get(PASSWORD_ENV)
            if not password:
                raise ValueError(f"basic auth needs a password: set ${PASSWORD_ENV}")
        token = None if username else bearer_token or os.environ.get(TOKEN_ENV)
        extra = parse_headers(headers)
        if token:
            extra["Authorization"] = f"Bearer {token}"
        self.job = job
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.buckets = bucket_list(buckets)
        self.distribution_buckets = bucket_list(distribution_buckets)
        self.name_conflicts = 0
        self._families: dict[str, tuple[str, int]] = {}  # name -> (zibrato type, series)
        self._claims: set[str] = set()
        self._store: CumulativeStore[tuple[str, Labels]] = CumulativeStore(
            buckets=self._bounds,
            ttl=series_ttl,
            max_series=self.aggregator.max_series,
            on_forget=self._forget,
        )
        self._push: Pusher[Sample] = Pusher(
            url=self.url,
            encode=self._encode,
            on_error=self.count_target_error,
            policy=StatusPolicy(retry=retry_server_errors),
            kind=self.kind,
            what="samples",
            headers={**_HEADERS, **extra},
            auth=(username, password) if username and password else None,
            secrets=[secret for secret in (password, token) if secret],
            timeout=timeout,
            max_buffer=max_buffer,
            max_per_request=MAX_PER_REQUEST,
            one_push_per_request=True,
            session=session,
            name_item=lambda sample: _describe(sample[0]),
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            clock=clock,
            pause=pause if pause is not None else self.stop_event.wait,
        )

    def __repr__(self) -> str:
        return f"<RemoteWriteBackend url={self.url!r} instance={self.instance!r}>"

    def describe(self) -> str:
        return f"writing to {self.url} (Prometheus remote write 1.0) as instance={self.instance}"

    def target_counters(self) -> Mapping[str, float]:
        return {
            "dropped_samples": self._push.dropped,
            "rejected_samples": self._push.rejected,
            "name_conflicts": self.name_conflicts,
            "evicted_series": self._store.evicted,
        }

    # -- one flush -----------------------------------------------------------------------
    def emit(self, rollup: Rollup) -> None:
        deadline = self.push_deadline()
        start = rollup.timestamp - rollup.interval
        for series in rollup.series:
            key = self._key(series)
            if key is not None:
                self._store.update(key, series, start=start, now=rollup.timestamp)
        self._store.expire(rollup.timestamp)
        stamp = int(rollup.timestamp * 1000)
        samples = [sample for key, run in self._store for sample in self._samples(key, run, stamp)]
        self._push.push(samples, deadline)

    def _key(self, series: Series) -> tuple[str, Labels] | None:
        """Return (family name, labels) of ``series``, or None if its name is taken."""
        name = metric_name(series.name, series.type)
        kind = _family_type(series.type)
        family = self._families.get(name)
        if family is None and self._claims.isdisjoint(_claimed_names(name, kind)):
            self._claims.update(_claimed_names(name, kind))
        elif family is None or family[0] != series.type:
            self.name_conflicts += 1
            self.count_target_error(
                MetricNameConflict(
                    f"{series.type} {series.name!r} would be written as {name!r}, which "
                    "another metric type already uses there; its samples are skipped"
                )
            )
            return None
        labels = series_labels(series, histogram=kind == "histogram")
        key = (name, self._with_target_labels(labels))
        if self._store.get(key) is None:
            self._families[name] = (series.type, (family[1] if family else 0) + 1)
        return key

    def _forget(self, key: tuple[str, Labels]) -> None:
        name = key[0]
        series_type, count = self._families[name]
        if count > 1:
            self._families[name] = (series_type, count - 1)
            return
        del self._families[name]
        self._claims.difference_update(_claimed_names(name, _family_type(series_type)))

    def _with_target_labels(self, labels: Labels) -> Labels:
        renamed = [(_RENAMED.get(name, name), value) for name, value in labels]
        return tuple(sorted([*renamed, ("instance", self.instance), ("job", self.job)]))

    def _bounds(self, series: Series) -> tuple[float, ...]:
        return self.buckets if series.type == SeriesType.TIMER else self.distribution_buckets

    def _samples(self, key: tuple[str, Labels], run: Run, stamp: int) -> Iterator[Sample]:
        name, labels = key
        histogram = run.histogram
        if histogram is None:
            yield _labelled(name, labels), float(run.value), stamp
            return
        total = 0
        for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
            total += count
            le = (*labels, ("le", format_number(bound)))
            yield _labelled(f"{name}_bucket", le), float(total), stamp
        yield _labelled(f"{name}_bucket", (*labels, ("le", "+Inf"))), float(histogram.count), stamp
        yield _labelled(f"{name}_sum", labels), float(histogram.sum), stamp
        yield _labelled(f"{name}_count", labels), float(histogram.count), stamp

    def _encode(self, samples: Sequence[Sample]) -> bytes:
        request = self._write_request()
        by_labels: dict[Labels, Any] = {}
        for labels, value, stamp in samples:
            series = by_labels.get(labels)
            if series is None:
                series = by_labels[labels] = request.timeseries.add()
                for label, text in labels:
                    series.labels.add(name=label, value=text)
            series.samples.add(value=value, timestamp=stamp)
        return bytes(self._compress(request.SerializeToString()))


def _labelled(name: str, labels: Labels) -> Labels:
    """Return ``labels`` with ``__name__`` added, sorted by name as remote write requires."""
    return tuple(sorted([("__name__", name), *labels]))


def _describe(labels: Labels) -> str:
    fields = dict(labels)
    name = fields.pop("__name__", "")
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in fields.items()) + "}"
