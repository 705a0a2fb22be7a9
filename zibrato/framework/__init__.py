"""The framework kit: what every front end (Django, Flask, Celery) shares, framework-free.

* :mod:`~zibrato.framework.schema`: the metric names, tags and bounded tag values;
* :mod:`~zibrato.framework.units`: one unit of work's accounting (a request's or a
  task's queries, a request's errors and view time, and where its time went) and
  recording it once, into series (:mod:`~zibrato.framework.recording`); its queries are
  a :class:`~zibrato.framework.queries.QueryTally`, each query's own duration is
  :mod:`~zibrato.framework.operations`';
* where the time goes (``docs/web-metrics.md``): :mod:`~zibrato.framework.time_spent`
  (what a unit notes, and recording it), :mod:`~zibrato.framework.breakdown`
  (exclusive time per component, for any unit of work), :mod:`~zibrato.framework.http_client`
  (outgoing calls of urllib3, ``requests`` and httpx), :mod:`~zibrato.framework.cache`
  (cache calls, hits and misses), :mod:`~zibrato.framework.templates` (what the adapters'
  template hooks share), :mod:`~zibrato.framework.statements` (the repeated statement of
  an N+1, normalized, and the code that issued it), and :mod:`~zibrato.framework.patches`
  (how a library without a hook is wrapped: idempotent and reversible);
* :mod:`~zibrato.framework.celery`: Celery's tasks as units of work (``instrument(app)``),
  with :mod:`~zibrato.framework.task_units` (a task's tags, state and recorder) and
  :mod:`~zibrato.framework.celery_process` (the receivers every app of a process shares);
* :mod:`~zibrato.framework.settings`: the settings every front end reads, one meaning per
  key (the keys themselves in :mod:`~zibrato.framework.setting_keys`), and one rule for
  a bad value;
* :mod:`~zibrato.framework.lazy`: one client per process, built on first use, and the
  timers and counters made before it that wait for it.

An adapter only reads its framework (Django's middleware and settings, Flask's hooks and
config, Celery's signals), translates its own setting names, and hands what it learnt to
these modules.
"""
