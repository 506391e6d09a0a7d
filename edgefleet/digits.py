"""Integers from text that a client controls.

``str.isdigit`` is true for digits of every script and for superscripts (``"²"``), and ``int``
accepts other scripts' digits, spaces and underscores; a topic level, query parameter or
header is a number here only when it is plain ASCII digits.
"""

from __future__ import annotations

import re

_INT = re.compile(r"-?[0-9]{1,19}")
_UINT = re.compile(r"[0-9]{1,19}")


def ascii_int(text: str) -> int | None:
    """``text`` as an integer when it is an optional ``-`` and 1-19 ASCII digits, else None."""
    return int(text) if _INT.fullmatch(text) else None


def ascii_uint(text: str) -> int | None:
    """``text`` as a non-negative integer when it is 1-19 ASCII digits, else None."""
    return int(text) if _UINT.fullmatch(text) else None
