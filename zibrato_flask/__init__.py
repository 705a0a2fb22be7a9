"""Zibrato for Flask: request, view and SQLAlchemy metrics, and ``flask zibrato`` commands.

>>> from flask import Flask
>>> from zibrato_flask import Zibrato
>>> app = Flask(__name__)
>>> zibrato = Zibrato(app)        # or Zibrato() then zibrato.init_app(app) in a factory
"""

from zibrato_flask.extension import Zibrato

__all__ = ["Zibrato"]
