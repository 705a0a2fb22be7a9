"""What the backends are built from, apart from the backends themselves.

* :mod:`~zibrato.backends.toolkit.naming`: metric names as a target spells them;
* :mod:`~zibrato.backends.toolkit.pacing`: how fast to send (UDP statsd);
* :mod:`~zibrato.backends.toolkit.merge`: rollups kept for a retry, merged into one;
* :mod:`~zibrato.backends.toolkit.httpserver`: the HTTP server of ``/metrics`` and the
  dashboard, with :mod:`~zibrato.backends.toolkit.connections` (bounded connection
  threads, deadlines) and :mod:`~zibrato.backends.toolkit.allowed_hosts` (the ``Host``
  names it answers).
"""
