"""``python -m zibrato``: the same as the ``zibrato`` command."""

from zibrato.cli import main

raise SystemExit(main())
