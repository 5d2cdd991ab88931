"""Many rows in one statement on PostgreSQL: each column one array, ``unnest`` makes rows;
many values in one parameter: ``= ANY(array)`` for an IN list (on SQLite, ``IN (SELECT value
FROM json_each(:values))``).

An ``executemany`` runs one statement per row on the server (parse, plan, execute, and for
an insert three foreign-key checks' triggers each), and a multi-row ``VALUES`` list or an
``IN`` list has SQLAlchemy compile one bind parameter per value. ``unnest(CAST(:a AS
INTEGER[]), CAST(:b AS TEXT[]), ...)`` is one statement with one parameter per column,
compiled once and cached, whatever the batch size. SQLite keeps ``executemany``: it runs in
the same process and has no per-statement round trip to save.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, String, Table, any_, bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

T = TypeVar("T")


def among(
    session: Session, column: ColumnElement[T] | QueryableAttribute[T], values: Iterable[T]
) -> ColumnElement[bool]:
    """``column IN (values)`` as one parameter instead of one per value: on PostgreSQL
    ``column = ANY(CAST(:values AS type[]))``, on SQLite ``column IN (SELECT value FROM
    json_each(:values))`` for ids and strings. A 1 000-id IN list is compiled by SQLAlchemy
    value by value on every execution (uncacheable, being a different length each time),
    and the sender claims a thousand rows a batch."""
    values = list(values)
    if session.get_bind().dialect.name != "postgresql":
        if not all(_json_exact(value) for value in values):
            return column.in_(values)
        each = func.json_each(bindparam(None, json.dumps(values), type_=String())).table_valued(
            "value"
        )
        return column.in_(select(each.c.value))
    array = ARRAY(column.type)
    return column == any_(cast(bindparam(None, values, type_=array), array))


def _json_exact(value: object) -> bool:
    """Whether SQLite's ``json_each`` hands ``value`` back as it was: ids, and strings
    without a NUL (SQLite's JSON functions cut text at one)."""
    return isinstance(value, int) or (isinstance(value, str) and "\x00" not in value)


@dataclass(frozen=True)
class Rows:
    """Rows as a table: ``source`` to select from, ``c[name]`` each column's expression."""

    source: TableValuedAlias
    c: Mapping[str, ColumnElement[Any]]


def rows_table(
    rows: Sequence[Mapping[str, Any]], types: Mapping[str, TypeEngine[Any]], name: str = "v"
) -> Rows:
    """``rows`` as a table whose columns are the keys of ``types``.

    A column with one value in every row (the edition, the status, the lease of a batch)
    is one scalar parameter rather than an array: psycopg dumps array elements one by one
    in Python, and for most of a batch's columns that would be a thousand copies.
    """
    first = rows[0]
    varying = [col for col, type_ in types.items() if any(row[col] != first[col] for row in rows)]
    varying = varying or list(types)[:1]  # something has to make the rows
    arrays = [
        cast(
            bindparam(f"{name}_{col}", [row[col] for row in rows], type_=ARRAY(types[col])),
            ARRAY(types[col]),
        )
        for col in varying
    ]
    source = func.unnest(*arrays).table_valued(*varying, name=name).render_derived()
    columns: dict[str, ColumnElement[Any]] = {
        col: source.c[col]
        if col in varying
        else cast(bindparam(f"{name}_{col}", first[col], type_=type_), type_)
        for col, type_ in types.items()
    }
    return Rows(source, columns)


def insert_pg(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    conflict: list[str] | None,
    returning: Sequence[str] = (),
) -> list[Row[Any]]:
    """``INSERT ... SELECT FROM unnest(...) [ON CONFLICT DO NOTHING]``, one statement for
    each set of keys the rows have; with ``returning``, the rows it inserted. Python-side
    column defaults (``created_at``) are rendered into the statement, once for it.
    ``conflict`` None: a plain INSERT, for rows no one else can have written (cheaper than
    PostgreSQL's speculative insertion)."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    inserted: list[Row[Any]] = []
    for columns, group in groups.items():
        values = rows_table(group, {column: table.c[column].type for column in columns})
        query = select(*(values.c[column] for column in columns)).select_from(values.source)
        statement = pg_insert(table).from_select(list(columns), query)
        if conflict is not None:
            statement = statement.on_conflict_do_nothing(index_elements=conflict)
        if returning:
            inserted += session.execute(statement.returning(*(table.c[c] for c in returning))).all()
        else:
            session.execute(statement)
    return inserted
