"""Django settings of the demo shop: the two Zibrato lines and little else.

The data folder (the SQLite file) comes from ``$ZIBRATO_DEMO_DATA`` (default
``demo_site/var``); the broker address from ``$ZIBRATO_PUBLISH``, which the demo runner
sets for the processes it starts (``ZIBRATO["PUBLISH"]`` left at None reads it).
"""

from __future__ import annotations

import os
from pathlib import Path

from demo_site.paths import data_dir

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "demo-only-never-use-this-key-in-production"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "demo_site.shop",
    "zibrato_django",
]

MIDDLEWARE = [
    "zibrato_django.middleware.ZibratoMiddleware",  # first: the request time covers the rest
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

# Metrics of this site are told apart from the Flask warehouse's by their source and tag;
# the tasks of the shop's Celery app (demo_site/worker.py) are measured too.
ZIBRATO = {
    "SOURCE": "django-shop",
    "TAGS": {"app": "shop"},
    "CELERY": "demo_site.worker:app",
}

ROOT_URLCONF = "demo_site.urls"
WSGI_APPLICATION = "demo_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "demo_site.shop.context.categories",  # the nav's category list, cached
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": data_dir() / "shop.sqlite3",
        # Two gunicorn workers write orders: WAL lets readers go on meanwhile.
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Each gunicorn worker keeps its own: the category list and the catalogue's ids.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The recommendation service the shop's recommendations/ page calls (make run starts it).
RECOMMENDATIONS_URL = os.environ.get("ZIBRATO_DEMO_RECOMMENDATIONS", "http://127.0.0.1:8002")

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
STATIC_URL = "static/"
