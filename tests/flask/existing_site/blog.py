"""A small blog, written the way Flask's tutorial writes one: an app factory, blueprints,
Flask-SQLAlchemy, sessions, an error handler, a CLI command. It stands for "an existing
Flask app": its own test suite must give the same results with Zibrato added.

``BLOG_ZIBRATO`` chooses how Zibrato is added: ``none``, ``constructor`` (``Zibrato(app)``
in the factory) or ``init_app`` (a module-level ``Zibrato()``, ``init_app`` in the factory,
and a decorator applied at import time).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click
import sqlalchemy as sa
from flask import Blueprint, Flask, abort, g, jsonify, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MODE = os.environ.get("BLOG_ZIBRATO", "none")


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

if MODE == "init_app":
    from zibrato_flask import Zibrato

    zibrato = Zibrato()
    timed: Callable[[Callable[..., Any]], Callable[..., Any]] = zibrato.time_me(name="blog.list")
else:

    def timed(func: Callable[..., Any]) -> Callable[..., Any]:
        return func


class User(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)


class Post(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int]
    title: Mapped[str]


class Conflict(Exception):
    pass


auth = Blueprint("auth", __name__, url_prefix="/auth")
blog = Blueprint("blog", __name__)


@auth.route("/register", methods=["POST"])
def register() -> ResponseReturnValue:
    name = request.form.get("name")
    if not name:
        abort(400)
    if db.session.scalar(sa.select(User).where(User.name == name)) is not None:
        raise Conflict(name)
    db.session.add(User(name=name))
    db.session.commit()
    return redirect(url_for("blog.index"))


@auth.route("/login", methods=["POST"])
def login() -> ResponseReturnValue:
    user = db.session.scalar(sa.select(User).where(User.name == request.form["name"]))
    if user is None:
        return "unknown user", 401
    session["user_id"] = user.id
    return redirect(url_for("blog.index"))


@auth.route("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("blog.index"))


@blog.before_app_request
def load_user() -> None:
    user_id = session.get("user_id")
    g.user = db.session.get(User, user_id) if user_id is not None else None


@timed
def list_posts() -> list[dict[str, str]]:
    posts = db.session.scalars(sa.select(Post).order_by(Post.id))
    return [{"title": p.title, "author": db.session.get(User, p.author_id).name} for p in posts]


@blog.route("/")
def index() -> ResponseReturnValue:
    return "\n".join(f"{p['title']} by {p['author']}" for p in list_posts())


@blog.route("/api/posts")
def api_posts() -> ResponseReturnValue:
    return jsonify(list_posts())


@blog.route("/posts/<int:post_id>")
def show(post_id: int) -> ResponseReturnValue:
    return db.get_or_404(Post, post_id).title


@blog.route("/create", methods=["POST"])
def create() -> ResponseReturnValue:
    if g.user is None:
        return redirect(url_for("auth.login"))
    db.session.add(Post(author_id=g.user.id, title=request.form["title"]))
    db.session.commit()
    return redirect(url_for("blog.index"))


@blog.route("/posts/<int:post_id>/delete", methods=["POST"])
def delete(post_id: int) -> ResponseReturnValue:
    post = db.get_or_404(Post, post_id)
    if g.user is None or post.author_id != g.user.id:
        abort(403)
    db.session.delete(post)
    db.session.commit()
    return redirect(url_for("blog.index"))


@blog.route("/crash")
def crash() -> ResponseReturnValue:
    raise LookupError("the blog crashed")


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create and configure the blog."""
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite://")
    app.config.update(test_config or {})
    db.init_app(app)
    if MODE == "constructor":
        from zibrato_flask import Zibrato as Extension

        Extension(app)
    elif MODE == "init_app":
        zibrato.init_app(app)
    app.register_blueprint(auth)
    app.register_blueprint(blog)

    @app.errorhandler(Conflict)
    def conflict(exc: Conflict) -> ResponseReturnValue:
        return f"{exc} exists", 409

    @app.errorhandler(404)
    def not_found(exc: Exception) -> ResponseReturnValue:
        return "nothing here", 404

    @app.cli.command("init-db")
    def init_db() -> None:
        db.create_all()
        click.echo(f"{db.session.scalar(sa.select(sa.func.count(User.id)))} users")

    return app
