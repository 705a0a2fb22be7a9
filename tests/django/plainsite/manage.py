#!/usr/bin/env python
"""An ordinary Django project with its own test suite (``manage.py test``).

With ``PLAINSITE_ZIBRATO=1`` the two setup lines of Zibrato are added; the suite's results
must not change (see tests/django/test_django_unchanged.py).
"""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
