"""Insert many rows fast, on SQLite and PostgreSQL alike (the hot path of 100,000-row imports).

SQLAlchemy's ``executemany`` processes every value through its type in Python, and psycopg parses
a statement with tens of thousands of ``%s`` placeholders slowly; at 100,000 rows both cost more
than the database. Here:

* each column's values are converted by its type's bind processor (nothing for ints, floats and
  text; once for a value the same in every row, such as the import's time stamp);
* SQLite gets multi-row ``INSERT … VALUES (?, …), (?, …)`` statements (``executemany`` when
  nothing is returned);
* PostgreSQL gets one ``INSERT … SELECT … FROM unnest(%b::type[], …)`` per batch: one array
  parameter per column, sent in binary.

An ``ON CONFLICT`` clause (the same text on both) and ``RETURNING`` columns may follow. Column and
table names come from the caller's :class:`~sqlalchemy.Table`, never from data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Table
from sqlalchemy.orm import Session

#: Values per SQLite statement (its limit is 32,766).
SQLITE_MAX_VALUES = 30_000
#: Rows per PostgreSQL statement.
PG_ROWS = 10_000


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *,
                constants: Mapping[str, Any] | None = None, on_conflict: str = "",
                returning: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (dicts with the same keys) into ``table`` in the session's transaction;
    ``constants`` are columns with one value for every row. Returns the ``returning`` columns of
    the rows inserted (those an ``on_conflict`` ``DO NOTHING`` skipped return nothing)."""
    if not rows:
        return []
    constants = dict(constants or {})
    columns = [c for c in rows[0] if c not in constants]
    dialect = session.get_bind().dialect
    connection = session.connection()

    def processor(name: str) -> Any:
        if isinstance(table.c[name].type, JSON):  # text on both (cast to json on PostgreSQL)
            return json.dumps
        return table.c[name].type.bind_processor(dialect)

    fixed = {}
    for name, value in constants.items():
        process = processor(name)
        fixed[name] = process(value) if process is not None and value is not None else value
    procs = [processor(c) for c in columns]
    data = [[r[c] for r in rows] for c in columns]
    for i, process in enumerate(procs):
        if process is not None:
            data[i] = [None if v is None else process(v) for v in data[i]]
    names = ", ".join([*columns, *fixed])
    tail = f" {on_conflict}" if on_conflict else ""
    if returning:
        tail += f" RETURNING {', '.join(returning)}"
    out: list[tuple[Any, ...]] = []
    n = len(rows)
    if dialect.name == "sqlite":
        width = len(columns) + len(fixed)
        per = max(1, SQLITE_MAX_VALUES // width)
        if not returning:
            sql = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join(['?'] * width)}){tail}"
            connection.exec_driver_sql(sql, [
                (*(col[i] for col in data), *fixed.values()) for i in range(n)])
            return out
        for start in range(0, n, per):
            stop = min(n, start + per)
            row = "(" + ", ".join(["?"] * width) + ")"
            sql = f"INSERT INTO {table.name} ({names}) VALUES {', '.join([row] * (stop - start))}{tail}"
            params: list[Any] = []
            for i in range(start, stop):
                params += [col[i] for col in data]
                params += fixed.values()
            out += [tuple(r) for r in connection.exec_driver_sql(sql, tuple(params))]
        return out
    select = []
    for c in columns:
        if isinstance(table.c[c].type, JSON):
            select.append(f"{c}::json")
        else:
            select.append(c)
    select += [f"%s::{table.c[c].type.compile(dialect=dialect)}" for c in fixed]
    arrays = ", ".join(  # %b: binary arrays (psycopg's text form escapes each element in Python)
        "%b::text[]" if isinstance(table.c[c].type, JSON)
        else f"%b::{table.c[c].type.compile(dialect=dialect)}[]" for c in columns)
    sql = (f"INSERT INTO {table.name} ({names}) SELECT {', '.join(select)} "
           f"FROM unnest({arrays}) AS t({', '.join(columns)}){tail}")
    for start in range(0, n, PG_ROWS):
        arrays_of = (*fixed.values(), *(col[start:start + PG_ROWS] for col in data))
        result = connection.exec_driver_sql(sql, arrays_of)
        if returning:
            out += [tuple(r) for r in result]
    return out
