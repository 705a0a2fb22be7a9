"""The blog's own tests: they know nothing about Zibrato."""

from __future__ import annotations

import pytest
from blog import Post, db
from flask import Flask
from flask.testing import FlaskClient


def login(client: FlaskClient, name: str) -> None:
    assert client.post("/auth/login", data={"name": name}).status_code == 302


def test_index_lists_posts(client: FlaskClient) -> None:
    assert client.get("/").data == b"first by ada\nsecond by bob"


def test_api(client: FlaskClient) -> None:
    assert client.get("/api/posts").json == [
        {"title": "first", "author": "ada"},
        {"title": "second", "author": "bob"},
    ]


def test_show_and_404(client: FlaskClient) -> None:
    assert client.get("/posts/1").data == b"first"
    response = client.get("/posts/99")
    assert (response.status_code, response.data) == (404, b"nothing here")
    assert client.get("/no/such/page").data == b"nothing here"


def test_register_and_conflict(client: FlaskClient) -> None:
    assert client.post("/auth/register", data={"name": "cy"}).headers["Location"] == "/"
    assert client.post("/auth/register", data={"name": "cy"}).status_code == 409
    assert client.post("/auth/register", data={}).status_code == 400


def test_login_create_delete(app: Flask, client: FlaskClient) -> None:
    assert client.post("/create", data={"title": "third"}).headers["Location"] == "/auth/login"
    login(client, "ada")
    client.post("/create", data={"title": "third"})
    with app.app_context():
        assert db.session.scalar(db.select(Post).where(Post.title == "third")) is not None
    assert client.post("/posts/2/delete").status_code == 403
    assert client.post("/posts/1/delete").status_code == 302
    client.get("/auth/logout")
    assert client.post("/posts/3/delete").status_code == 403


def test_unknown_login(client: FlaskClient) -> None:
    assert client.post("/auth/login", data={"name": "eve"}).status_code == 401


def test_crash_propagates_in_testing(client: FlaskClient) -> None:
    with pytest.raises(LookupError, match="the blog crashed"):
        client.get("/crash")


def test_crash_is_a_500_in_production(app: Flask) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.logger.disabled = True
    assert app.test_client().get("/crash").status_code == 500


def test_method_not_allowed(client: FlaskClient) -> None:
    assert client.delete("/").status_code == 405


def test_cli_init_db(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0 and result.output == "2 users\n"


def test_queries_inside_an_app_context(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        assert db.session.get(Post, 1).title == "first"
        assert client.get("/posts/2").data == b"second"


@pytest.mark.parametrize("post_id", [1, 2, 3])
def test_many_apps(client: FlaskClient, post_id: int) -> None:
    assert client.get(f"/posts/{post_id}").status_code == (200 if post_id < 3 else 404)
