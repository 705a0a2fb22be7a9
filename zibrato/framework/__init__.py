"""The framework kit: what every front end (Django, Flask, Celery) shares, framework-free.

* :mod:`~zibrato.framework.schema`: the metric names, tags and bounded tag values;
* :mod:`~zibrato.framework.units`: one unit of work's accounting (a request's queries,
  errors and view time) and recording it once;
* :mod:`~zibrato.framework.lazy`: one client per process, built on first use.

An adapter only reads its framework (Django's middleware and settings, Flask's hooks and
config) and hands what it learnt to these modules.
"""
