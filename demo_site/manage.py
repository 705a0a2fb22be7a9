"""Django's command line for the demo shop: ``python -m demo_site.manage COMMAND``.

Run from the repository's root, e.g. ``python -m demo_site.manage seed_shop`` or
``python -m demo_site.manage zibrato_broker``.
"""

import os
import sys

from django.core.management import execute_from_command_line

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    execute_from_command_line(sys.argv)
