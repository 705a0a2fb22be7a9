"""WSGI entry point; records one metric at import, as a preloaded app's own code might."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djtest.settings")
application = get_wsgi_application()

from zibrato_django import zibrato  # noqa: E402

# Under gunicorn --preload this starts the client in the master, before the fork.
zibrato.incr("djtest.loaded")
