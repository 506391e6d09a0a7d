"""Index lookups for ``tags.<path> = <constant>``: the filter that lets a tag query skip the scan.

The twins' tags are one JSON document per twin, so no expression index fits every tag a fleet
may use. Each database gets one generic index instead (migration 0007):

* PostgreSQL: a GIN index (``jsonb_path_ops``) on ``twins.tags``; ``tags @> '{"a": {"b": v}}'``
  is true whenever ``tags.a.b = v`` (same type; ``1`` and ``1.0`` are equal in ``jsonb``).
* SQLite: ``twin_tag_values`` holds every primitive leaf of every twin's tags as
  (twin key, ``json_tree`` full key, ``json_tree`` type, value), kept by triggers on ``twins``
  (insert, update of tags, delete), and indexed on (path, value).

``tag_lookup(parts, value, dialect)`` returns that filter. It is a *superset* filter: callers AND
it with the exact comparison (``cloud_hub.query.sql``), so the result does not change, only how the
database finds the rows. It returns None where it cannot promise the superset: a key SQLite's
``json_tree`` might spell in a way not predicted here, or a constant that is not a primitive.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, String, and_, cast, column, func, literal, select, table, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from cloud_hub.models import TwinRow
from cloud_hub.query.sql import plain_json_key

TAG_VALUES = table(
    "twin_tag_values",
    column("device_id", String),
    column("module_id", String),
    column("path", String),
    column("type", String),
    column("value"),
)
# json_tree spells a key bare when it is a letter followed by letters and digits; other keys
# are quoted by newer versions (3.40 here) and bare in older ones, so a lookup tries both. Keys
# are shown as stored (escaped), so only printable ASCII keys JSON stores as themselves are
# looked up.
_PLAIN_KEY = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")
_LOOKUP_KEY = re.compile(r"[ -~]+\Z")  # printable ASCII; json_tree shows keys as stored
_SAFE_INT = 2**53


def sqlite_paths(parts: Sequence[str]) -> list[str] | None:
    """The ``json_tree`` full keys a leaf at ``parts`` (below ``$``) can have, or None."""
    if not parts or not all(_LOOKUP_KEY.match(p) and plain_json_key(p) for p in parts):
        return None
    bare = "$" + "".join(f".{p}" for p in parts)
    quoted = "$" + "".join(f".{p}" if _PLAIN_KEY.match(p) else f'."{p}"' for p in parts)
    return [bare] if bare == quoted else [bare, quoted]


def containment_doc(parts: Sequence[str], value: Any) -> str:
    """``{"a": {"b": value}}`` as JSON text for ``tags @> ...``."""
    doc: Any = value
    for part in reversed(parts):
        doc = {part: doc}
    return json.dumps(doc)


def _primitive(value: Any) -> bool:
    if value is None or type(value) in (str, bool):
        return True
    if type(value) is int:
        return -_SAFE_INT < value < _SAFE_INT
    return type(value) is float and math.isfinite(value) and abs(value) < _SAFE_INT


def tag_lookup(parts: Sequence[str], value: Any, dialect: str) -> ColumnElement[bool] | None:
    """A superset filter of the twins whose ``tags.<parts>`` equals ``value`` (see above), for
    the database ``dialect`` names; None where there is no such index."""
    paths = sqlite_paths(parts)
    if paths is None or not _primitive(value):
        return None
    if dialect == "postgresql":
        doc = cast(literal(containment_doc(parts, value), String()), JSONB)
        return TwinRow.tags.op("@>", is_comparison=True)(doc)
    if dialect != "sqlite":
        return None
    return tuple_(TwinRow.device_id, TwinRow.module_id).in_(_sqlite_keys(paths, value))


def _sqlite_keys(paths: list[str], value: Any) -> Select[Any]:
    tv = TAG_VALUES.c
    where: list[ColumnElement[bool]] = [tv.path.in_(paths)]
    if value is None:
        where += [tv.type == "null", tv.value.is_(None)]
    elif type(value) is bool:
        where += [tv.type == ("true" if value else "false"), tv.value == literal(int(value))]
    elif type(value) is str:
        where += [tv.type == "text", tv.value == literal(value, String())]
    else:
        where += [tv.type.in_(["integer", "real"]), tv.value == literal(value)]
    return select(tv.device_id, tv.module_id).where(and_(*where))


def count_up_to(parts: Sequence[str], value: Any, dialect: str, cap: int) -> Select[Any] | None:
    """How many twins (at most ``cap``) ``tag_lookup(parts, value, dialect)`` selects, read
    from the index alone. A lookup that selects many twins is a worse path than a scan in key
    order that stops at the end of a page, so callers use it only below a cap."""
    lookup = tag_lookup(parts, value, dialect)
    if lookup is None:
        return None
    if dialect == "sqlite":
        found = _sqlite_keys(sqlite_paths(parts) or [], value).limit(cap).subquery()
    else:
        found = select(literal(1)).select_from(TwinRow).where(lookup).limit(cap).subquery()
    return select(func.count()).select_from(found)
