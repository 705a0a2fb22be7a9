"""Errors that mean "the user asked for something that cannot work".

Front ends (the ``zibrato`` command, ``manage.py zibrato_broker``, ``flask zibrato``) turn
a :class:`ConfigError` into one line that says what is wrong and what to do, never a
traceback. Its message is that line, without the program's name.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting, option or address that cannot work; the message says what to do."""


class AddressInUse(ConfigError, OSError):
    """Something else already listens on an address we were asked to bind."""
