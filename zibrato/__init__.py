"""Zibrato: measure running code with almost no observer effect.

>>> from zibrato import Zibrato
>>> z = Zibrato()                      # doctest: +SKIP
>>> z.incr("orders.placed")            # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from zibrato.client import Zibrato
from zibrato.instruments import Counter, Timer
from zibrato.levels import LEVELS
from zibrato.lifecycle import flushed

try:
    __version__ = version("zibrato")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["LEVELS", "Counter", "Timer", "Zibrato", "__version__", "flushed"]
