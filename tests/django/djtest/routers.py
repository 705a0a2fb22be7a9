"""Send the ``Note`` model to the second database alias, ``other``."""

from typing import Any


class OtherDatabaseRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return "other" if model._meta.model_name == "note" else None

    db_for_write = db_for_read

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool:
        if model_name == "note":
            return db == "other"
        return db == "default"
