"""``python -m demo_site.manage seed_shop``: load the demo catalogue into an empty database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from demo_site.shop.seed import seed_shop


class Command(BaseCommand):
    help = "Load the demo shop's categories, products and reviews (nothing if already there)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset", action="store_true", help="delete the catalogue and its orders first"
        )

    def handle(self, *args: Any, reset: bool = False, **options: Any) -> None:
        count = seed_shop(reset=reset)
        self.stdout.write(f"the shop has {count} products")
