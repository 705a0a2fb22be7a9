"""The framework kit: what every front end (Django, Flask, Celery) shares, framework-free.

* :mod:`~zibrato.framework.schema`: the metric names, tags and bounded tag values;
* :mod:`~zibrato.framework.units`: one unit of work's accounting (a request's queries,
  errors and view time) and recording it once;
* :mod:`~zibrato.framework.settings`: the settings every front end reads, one meaning per
  key (the keys themselves in :mod:`~zibrato.framework.setting_keys`), and one rule for
  a bad value;
* :mod:`~zibrato.framework.lazy`: one client per process, built on first use, and the
  timers and counters made before it that wait for it.

An adapter only reads its framework (Django's middleware and settings, Flask's hooks and
config), translates its own setting names, and hands what it learnt to these modules.
"""
