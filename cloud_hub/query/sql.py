"""SQL prefilter for conditions (superset filter pushed into the database)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloud_hub.query.syntax import Condition

Resolver = Callable[[list[str]], Any]


def compile_prefilter(condition: Condition, resolver: Resolver) -> Any:
    """Return a SQL boolean expression selecting a superset of the matching twins, or None."""
    return None
