"""Repeated statements (``zibrato.framework.statements``): SQL normalized so that no value
ever leaves the process, and the application code that issued it. The frameworks' N+1
views (a view, a helper module, a template tag) are in the Django and Flask suites.
"""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zibrato.framework import schema
from zibrato.framework.statements import (
    MAX_PER_ROUTE,
    UNKNOWN,
    ApplicationCode,
    Location,
    RepeatedStatements,
    find_location,
    normalize,
    short_path,
)
from zibrato.protocol import MAX_TAG_LENGTH


@pytest.mark.parametrize(
    ("sql", "normalized"),
    [
        # Django's SQL: quoted identifiers, %s placeholders, a select list of columns.
        (
            'SELECT "shop_category"."id", "shop_category"."name" FROM "shop_category" '
            'WHERE "shop_category"."id" = %s LIMIT 21',
            "SELECT … FROM shop_category WHERE shop_category.id = ? LIMIT ?",
        ),
        # IN-lists of any length are one statement.
        ("SELECT id FROM t WHERE id IN (%s, %s, %s)", "SELECT id FROM t WHERE id IN (?)"),
        ("select id from t where id in ( 1,2 , 3 )", "select id from t where id in (?)"),
        # Literals: strings (with doubled quotes), numbers, hex, negative, decimals.
        (
            "UPDATE t SET a = 'O''Brien', b = -3.5e2, c = 0xFF WHERE d = .5",
            "UPDATE t SET a = ?, b = -?, c = ? WHERE d = ?",
        ),
        # SQLAlchemy's and asyncpg's placeholders; Postgres casts stay.
        (
            "SELECT a FROM t WHERE b = :b_1 AND c = $1::int",
            "SELECT a FROM t WHERE b = ? AND c = ?::int",
        ),
        # MySQL backticks; a double-quoted thing that is no identifier is a value.
        ('SELECT `a` FROM `t` WHERE b = "not an identifier"', "SELECT a FROM t WHERE b = ?"),
        # Repeated VALUES tuples collapse; comments go.
        (
            "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y') /* sqlcommenter='x' */ -- tail",
            "INSERT INTO t (a, b) VALUES (?, ?)",
        ),
        # A short select list stays; an aggregate keeps its name.
        ("SELECT COUNT(*) AS __count FROM t", "SELECT COUNT(*) AS __count FROM t"),
        ("SELECT DISTINCT a, b FROM t", "SELECT DISTINCT … FROM t"),
        # Identifiers with digits are not numbers.
        ("SELECT t1.c2 FROM t1 WHERE t1.c3 = 4", "SELECT t1.c2 FROM t1 WHERE t1.c3 = ?"),
        # Whitespace and newlines collapse.
        ("SELECT\n  a\nFROM\tt", "SELECT a FROM t"),
    ],
)
def test_statements_are_normalized(sql: str, normalized: str) -> None:
    assert normalize(sql) == normalized


def test_an_unterminated_string_never_leaks() -> None:
    assert normalize("SELECT a FROM t WHERE b = 'secret") == "SELECT a FROM t WHERE b = ?"
    assert "secret" not in normalize('SELECT a FROM t WHERE b = "secret value')


def test_a_huge_statement_fits_the_protocol() -> None:
    huge = "SELECT " + ", ".join(f"c{i}" for i in range(5000)) + " FROM t WHERE a = 'x'"
    text = normalize(huge)
    assert len(text) <= MAX_TAG_LENGTH and text.endswith("…") and "'x'" not in text
    long_where = "SELECT a FROM t WHERE " + " AND ".join(f"c{i} = {i}" for i in range(500))
    text = normalize(long_where)
    assert len(text) == MAX_TAG_LENGTH and text.endswith("…")


VALUES = st.one_of(
    st.text(min_size=4, max_size=30).filter(lambda s: s.strip() and "'" not in s),
    st.integers(min_value=1000, max_value=10**12),
    st.floats(min_value=1000, max_value=1e12, allow_nan=False),
)


@given(values=st.lists(VALUES, min_size=1, max_size=6), ws=st.sampled_from([" ", "\n", "  "]))
def test_no_literal_value_survives_normalization(values: list[object], ws: str) -> None:
    literals = [f"'{v}'" if isinstance(v, str) else repr(v) for v in values]
    sql = f"SELECT a,{ws}b FROM t WHERE c IN ({', '.join(literals)}) AND d = {literals[0]}"
    text = normalize(sql)
    for value in values:
        shown = str(value)
        assert shown not in text or shown.lower() in sql.split("WHERE")[0].lower()
    assert len(text) <= MAX_TAG_LENGTH


@given(st.text(max_size=3000))
def test_any_text_normalizes_within_the_bounds(sql: str) -> None:
    text = normalize(sql)
    assert isinstance(text, str) and len(text) <= MAX_TAG_LENGTH


def issue_from_here(sampler: RepeatedStatements) -> Location:
    return sampler.locate("default", "SELECT 1", sys._getframe(0))


def test_the_location_is_the_first_application_frame() -> None:
    sampler = RepeatedStatements()
    location = issue_from_here(sampler)
    # Relative to the sys.path entry it is imported from (pytest puts tests/web there).
    assert location.file == "test_statements.py"
    assert location.line == issue_from_here.__code__.co_firstlineno + 1
    assert location.function == "issue_from_here"
    assert location.template is None


def test_library_frames_are_skipped_unless_named_as_the_application() -> None:
    code = ApplicationCode()
    frame = sys._getframe(0)
    # pytest's own frames, further out, live in site-packages: not the application.
    outer = frame
    while outer.f_back is not None:
        outer = outer.f_back
        if outer.f_globals.get("__name__", "").startswith("_pytest"):
            break
    assert outer.f_globals["__name__"].startswith("_pytest")
    assert code.path_of(outer) is None
    code.add_packages(["_pytest"])  # installed into site-packages, but the project's own
    assert code.path_of(outer) is not None
    assert find_location(None, code) == UNKNOWN


def test_short_paths_are_relative_to_their_sys_path_entry() -> None:
    assert short_path(schema.__file__) == "zibrato/framework/schema.py"


def test_the_stack_is_walked_at_most_once_per_interval_per_statement() -> None:
    now = [0.0]
    sampler = RepeatedStatements(every=10.0, clock=lambda: now[0])
    for second in range(100):
        now[0] = float(second)
        issue_from_here(sampler)
    assert sampler.walks == 10


def test_at_most_k_statements_per_route_are_kept() -> None:
    sampler = RepeatedStatements()
    here = Location("app.py", 1, "view")
    tags = [
        sampler.tags({schema.ROUTE: "r/"}, "default", f"SELECT {n} FROM t{n}", here)
        for n in range(MAX_PER_ROUTE + 3)
    ]
    texts = [t[schema.QUERY_TEXT] for t in tags]
    assert len(set(texts[:MAX_PER_ROUTE])) == MAX_PER_ROUTE
    assert texts[MAX_PER_ROUTE:] == [schema.OTHER] * 3
    assert schema.CODE_FILE not in tags[-1]
    other_route = sampler.tags({schema.ROUTE: "other/"}, "default", "SELECT 9 FROM t9", here)
    assert other_route[schema.QUERY_TEXT] == "SELECT ? FROM t9"
    assert tags[0] == {
        schema.ROUTE: "r/",
        schema.DB_NAMESPACE: "default",
        schema.QUERY_TEXT: "SELECT ? FROM t0",
        schema.CODE_FILE: "app.py",
        schema.CODE_LINE: "1",
        schema.CODE_FUNCTION: "view",
    }
