"""Settings of the Django test site (``tests/django/djtest``).

The environment lets subprocess tests aim it elsewhere: ``DJTEST_PUBLISH`` (where the shared
client publishes), ``DJTEST_DB`` (a SQLite file instead of the test databases),
``DJTEST_FRONTEND`` / ``DJTEST_BACKEND`` / ``DJTEST_JSONL`` (what ``manage.py
zibrato_broker`` binds and writes), ``DJTEST_CURVE`` (CURVE keys of the client and the broker);
``DJTEST_ZIBRATO`` (a Python literal) replaces the whole ``ZIBRATO`` setting and
``DJTEST_ZIBARTO`` sets a misspelled one.
"""

import ast
import os
import tempfile

BASE = os.path.dirname(os.path.abspath(__file__))
DB_FILE = os.environ.get("DJTEST_DB") or os.path.join(tempfile.gettempdir(), "djtest.sqlite3")

SECRET_KEY = "djtest-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "djtest.urls"
WSGI_APPLICATION = "djtest.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "zibrato_django",
    "rest_framework",
    "djtest",
]
MIDDLEWARE = [
    "zibrato_django.middleware.ZibratoMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "djtest.middleware.slow_paths",
    "djtest.middleware.early_return",
    "djtest.middleware.fail_after",
    "djtest.middleware.sabotage",
]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB_FILE},
    "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB_FILE + ".other"},
}
DATABASE_ROUTERS = ["djtest.routers.OtherDatabaseRouter"]
TEMPLATES = [
    {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True},
    {"BACKEND": "django.template.backends.jinja2.Jinja2", "APP_DIRS": True, "NAME": "jinja2"},
]
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "db": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "djtest_cache"},
    "files": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": os.path.join(tempfile.gettempdir(), f"djtest-cache-{os.getpid()}"),
    },
}

ZIBRATO = {
    # Nobody listens there: metrics are captured in tests, or aimed at a broker by the env.
    "PUBLISH": os.environ.get("DJTEST_PUBLISH") or f"ipc://{tempfile.gettempdir()}/djtest-none",
    "EXCLUDE_PATHS": [r"^/health"],
    "BROKER_FRONTEND": os.environ.get("DJTEST_FRONTEND", "tcp://127.0.0.1:0"),
    "BROKER_BACKEND_ADDRESS": os.environ.get("DJTEST_BACKEND", "tcp://127.0.0.1:0"),
    "CURVE": os.environ.get("DJTEST_CURVE"),
    "BACKENDS": [
        {
            "KIND": "jsonl",
            "PATH": os.environ.get(
                "DJTEST_JSONL", os.path.join(tempfile.gettempdir(), "djtest.jsonl")
            ),
            "FLUSH": 0.2,
        }
    ],
}
if "DJTEST_ZIBRATO" in os.environ:
    ZIBRATO = ast.literal_eval(os.environ["DJTEST_ZIBRATO"])
if "DJTEST_ZIBARTO" in os.environ:
    ZIBARTO = ast.literal_eval(os.environ["DJTEST_ZIBARTO"])
