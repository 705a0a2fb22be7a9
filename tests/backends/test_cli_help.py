"""What ``zibrato backend KIND --help``, ``zibrato backend --help`` and ``zibrato run --help``
show: KIND named once and described, every option with a readable value name."""

from __future__ import annotations

import re

import pytest

from zibrato import backends
from zibrato.cli import backend_parser, main, run_parser

KINDS = list(backends.BUILTIN)


def usage(text: str) -> str:
    return text.split("\n\n", 1)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_backend_kind_help_names_the_kind_once_and_lists_its_options(kind: str) -> None:
    parser, cls = backend_parser([kind, "--help"])
    assert cls is not None
    text = parser.format_help()
    assert usage(text).startswith(f"usage: zibrato backend {kind} [-h]")
    assert "KIND" not in text and "positional arguments" not in text
    assert text.count(f"zibrato backend {kind}") == 1
    for option in cls.options:
        assert f"--{option.name}" in text, option.name
    assert f"{kind} backend options ({cls.__name__})" in text
    assert "`zibrato backend --help` lists the other kinds" in " ".join(text.split())


def test_backend_help_describes_kind() -> None:
    parser, cls = backend_parser(["--help"])
    assert cls is None
    text = parser.format_help()
    assert usage(text) == "usage: zibrato backend KIND [options]"
    described = re.search(r"\n  KIND +(.+?)\n\n", text, re.S)
    assert described is not None, text
    for kind in KINDS:
        assert kind in described.group(1)
    assert "package.module:Class" in " ".join(described.group(1).split())
    assert "zibrato backend KIND --help" in text


def test_run_help_shows_unprefixed_value_names() -> None:
    parser, classes = run_parser(["--help"])
    text = parser.format_help()
    assert set(classes) == set(KINDS)
    for kind in KINDS:  # not --prometheus-listen PROMETHEUS_LISTEN
        assert not re.search(rf"--{kind}-\S+ {kind.upper()}_", text), kind
    for shown in (
        "--prometheus-listen HOST:PORT",
        "--prometheus-allowed-hosts NAMES",
        "--dashboard-allowed-hosts NAMES",
        "--dashboard-path FILE",
        "--frontend ADDR",
        "--backend-address ADDR",
        "--backend KIND",
    ):
        assert shown in text, shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backend"], "zibrato backend: the following arguments are required: KIND"),
        (["backend", "nosuch"], "zibrato backend: unknown backend 'nosuch'"),
        (
            ["backend", "prometheus", "--allowed-hosts", "a.example:80"],
            "zibrato backend prometheus: argument --allowed-hosts: allowed-hosts takes host "
            "names without a port, not 'a.example:80'",
        ),
        (
            ["run", "--backend", "dashboard", "--dashboard-allowed-hosts", "a b"],
            "zibrato run: argument --dashboard-allowed-hosts: allowed-hosts takes host names",
        ),
        (
            ["backend", "prometheus", "--buckets", "soon"],
            "zibrato backend prometheus: argument --buckets: buckets must be finite numbers "
            "separated by commas, not 'soon'",
        ),
    ],
)
def test_mistakes_are_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
