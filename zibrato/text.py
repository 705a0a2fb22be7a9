"""Show names, sources and tags that came from the network on a terminal, safely.

Anything a publisher sends may be hostile: a tag value with a newline forges a second
line, an ANSI escape sequence recolours or clears the terminal, a bidi override reverses
what follows, and a tag value ``"eu shop=us"`` would read as two tags. ``zibrato tail``
and the console backend therefore show every such text through these helpers:

>>> printable("ok\\n\\x1b[2J")
'ok\\\\n\\\\x1b[2J'
>>> label("shop", "eu shop=us")
'shop="eu shop=us"'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

# A value containing one of these (or nothing at all) is quoted, so fields stay apart.
_NEEDS_QUOTES = frozenset(' =",')


def printable(text: str) -> str:
    """Return ``text`` with backslashes doubled and every non-printable character escaped.

    Control characters (newlines, ESC, DEL, C1), line and paragraph separators, format
    characters (bidi overrides, zero-width joiners) and non-ASCII spaces become Python
    escapes such as ``\\n``, ``\\x1b`` and ``\\u202e``.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        "\\\\" if char == "\\" else char if char.isprintable() else _escape(char) for char in text
    )


def _escape(char: str) -> str:
    return char.encode("unicode_escape").decode("ascii")


def quoted(text: str) -> str:
    """Return ``printable(text)``, in double quotes when it is empty or holds a space,
    ``=``, ``"`` or ``,`` (a quote inside becomes ``\\"``)."""
    shown = printable(text)
    if shown and _NEEDS_QUOTES.isdisjoint(shown):
        return shown
    return '"' + shown.replace('"', '\\"') + '"'


def label(key: str, value: str) -> str:
    """Return one tag as ``key=value``, each side shown safely (see :func:`quoted`)."""
    return f"{quoted(key)}={quoted(value)}"


def labels(source: str | None, tags: Mapping[str, str]) -> Iterator[str]:
    """Yield ``source=SOURCE`` (when there is one), then every tag sorted by key."""
    if source:
        yield label("source", source)
    for key, value in sorted(tags.items()):
        yield label(key, value)
