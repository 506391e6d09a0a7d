"""Many-row INSERTs and UPDATEs in few statements on both databases.

SQLite runs a statement per row in-process (``executemany`` costs little there). PostgreSQL's
driver would send one statement per row, and the server's per-statement work then dominates a
bulk write; there the rows go as one JSON array in a single statement
(``INSERT ... SELECT FROM jsonb_to_recordset(...)``, ``UPDATE ... FROM jsonb_to_recordset(...)``),
whose text does not change with the row count, so it is compiled and parsed once.

JSON columns take Python values (stored as SQLAlchemy's JSON type stores them, ``None`` as JSON
null) or, where named in ``json_text``, JSON text the caller encoded once for many rows. On
PostgreSQL each distinct such text is sent (and parsed by the server) once per statement, however
many rows share it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, literal_column, text, update
from sqlalchemy.sql import sqltypes
from sqlalchemy.types import TypeEngine


def insert_rows(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    constants: Mapping[str, str] | None = None,
) -> None:
    """INSERT the rows (dicts by column name, all with the same keys); ``constants`` are SQL
    literals for the other columns (e.g. ``"'{}'"``), the same in every row."""
    if not rows:
        return
    constants = constants or {}
    if conn.dialect.name != "postgresql":
        stmt = insert(table).values({c: literal_column(v) for c, v in constants.items()})
        conn.execute(stmt, list(rows))
        return
    rows = _with_defaults(table, rows, constants)
    names = list(rows[0])
    columns = ", ".join(f'"{n}"' for n in [*names, *constants])
    picked = ", ".join([*(_pg_value(table, n) for n in names), *constants.values()])
    source = _pg_source(conn, table, names)
    sql = f'INSERT INTO "{table.name}" ({columns}) SELECT {picked} FROM {source}'
    conn.execute(text(sql), {"rows": _pg_rows(names, rows)})


def update_rows(
    conn: Connection,
    table: Table,
    keys: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    json_text: Sequence[str] = (),
) -> None:
    """``UPDATE table SET <the other columns of the rows> WHERE <keys>`` for each row."""
    if not rows:
        return
    names = list(rows[0])
    columns = [n for n in names if n not in keys]
    if conn.dialect.name != "postgresql":
        stmt = (
            update(table)
            .where(*(table.c[k] == bindparam(f"k_{k}") for k in keys))
            .values(
                {c: bindparam(f"v_{c}", type_=_sqlite_type(table, c, json_text)) for c in columns}
            )
        )
        params = [
            {**{f"k_{k}": row[k] for k in keys}, **{f"v_{c}": row[c] for c in columns}}
            for row in rows
        ]
        conn.execute(stmt, params)
        return
    # Many rows usually share a JSON text (one deployment's document): each distinct text goes
    # once, in a documents array parsed once per statement, and a row holds its index there.
    texts: dict[str, int] = {}
    shared = [c for c in columns if c in json_text]
    if shared:
        rows = [
            {**row, **{c: texts.setdefault(row[c], len(texts)) for c in shared}} for row in rows
        ]
    sets = ", ".join(f'"{c}" = {_pg_value(table, c, c in shared)}' for c in columns)
    match = " AND ".join(f'"{table.name}"."{k}" = v."{k}"' for k in keys)
    source = _pg_source(conn, table, names, shared)
    docs = "WITH d AS MATERIALIZED (SELECT CAST(:docs AS JSONB) AS docs) " if shared else ""
    sql = f'{docs}UPDATE "{table.name}" SET {sets} FROM {source}{", d" if shared else ""} '
    sql += f"WHERE {match}"
    bound = {"rows": _pg_rows(names, rows)}
    if shared:
        bound["docs"] = "[" + ",".join(texts) + "]"
    conn.execute(text(sql), bound)


def _with_defaults(
    table: Table, rows: Sequence[Mapping[str, Any]], constants: Mapping[str, str]
) -> Sequence[Mapping[str, Any]]:
    """The rows with the Python-side column defaults SQLAlchemy's INSERT would add."""
    defaults: dict[str, Any] = {}
    for col in table.columns:
        default = col.default
        if col.key in rows[0] or col.key in constants or default is None:
            continue
        if getattr(default, "is_scalar", False):
            defaults[col.key] = default.arg  # type: ignore[attr-defined]
        elif getattr(default, "is_callable", False):
            defaults[col.key] = default.arg(None)  # type: ignore[attr-defined]
    if not defaults:
        return rows
    return [{**defaults, **row} for row in rows]


def encode_json(value: Any) -> str:
    """The JSON text SQLAlchemy's JSON type stores for ``value`` (for ``json_text`` columns:
    a document many rows share is encoded once)."""
    return json.dumps(value)


def _sqlite_type(table: Table, name: str, json_text: Sequence[str]) -> TypeEngine[Any]:
    return sqltypes.Text() if name in json_text else table.c[name].type


def _is_json(table: Table, name: str) -> bool:
    return isinstance(table.c[name].type, sqltypes.JSON)


def _pg_source(
    conn: Connection, table: Table, names: Sequence[str], indexes: Sequence[str] = ()
) -> str:
    """The rows as a relation ``v``; the columns of ``indexes`` are documents array indexes."""
    record = ", ".join(
        f'"{n}" {"INTEGER" if n in indexes else table.c[n].type.compile(dialect=conn.dialect)}'
        for n in names
    )
    return f"jsonb_to_recordset(CAST(:rows AS JSONB)) AS v({record})"


def _pg_value(table: Table, name: str, indexed: bool = False) -> str:
    if indexed:
        return f'd.docs -> v."{name}"'
    # jsonb_to_recordset reads a JSON null as SQL NULL; the JSON type stores JSON null.
    if _is_json(table, name):
        return f"COALESCE(v.\"{name}\", 'null'::jsonb)"
    return f'v."{name}"'


def _pg_rows(names: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as one JSON array of objects (one ``json.dumps``: the C encoder throughout)."""
    return json.dumps([{n: row[n] for n in names} for row in rows], default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
