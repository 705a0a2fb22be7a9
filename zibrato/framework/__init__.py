"""The framework kit: what every front end (Django, Flask, Celery) shares, framework-free.

* :mod:`~zibrato.framework.schema`: the metric names, tags and bounded tag values;
* :mod:`~zibrato.framework.units`: one unit of work's accounting (a request's or a
  task's queries, a request's errors and view time) and recording it once;
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
