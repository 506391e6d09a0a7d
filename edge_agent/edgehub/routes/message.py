"""The view of a message that route conditions evaluate against."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

MISSING: Final = object()
_BAD: Final = object()
_ENCODINGS = {"utf-8": "utf-8", "utf-16": "utf-16-le", "utf-32": "utf-32-le"}

TWIN_CHANGE_SOURCE = "/twinChangeNotifications"


def module_source(module_id: str, output: str | None = None) -> str:
    """The routing source of a module's message (``/messages/modules/<m>/outputs/<o>``)."""
    if output:
        return f"/messages/modules/{module_id}/outputs/{output}"
    return f"/messages/modules/{module_id}"


def source_key(source: str) -> str:
    """Case-insensitive source with one trailing slash: prefix tests then stop at a segment."""
    return source.strip().rstrip("/").lower() + "/"


def encode_body(text: str, content_encoding: str | None) -> bytes:
    codec = _ENCODINGS.get((content_encoding or "").lower(), "utf-8")
    return text.encode(codec, errors="surrogatepass")


class RouteMessage:
    """Source, body and the two property bags (looked up case-insensitively, like IoT Edge)."""

    __slots__ = ("source", "source_key", "body", "_props", "_sys", "_json")

    def __init__(
        self,
        source: str,
        body: bytes = b"",
        properties: Mapping[str, str | None] | None = None,
        system_properties: Mapping[str, str | None] | None = None,
    ) -> None:
        self.source = source
        self.source_key = source_key(source)
        self.body = body
        self._props = {k.lower(): v for k, v in (properties or {}).items()}
        self._sys = {k.lower(): v for k, v in (system_properties or {}).items()}
        self._json: Any = None

    def property(self, name: str) -> Any:
        """The application property's value: ``str``, ``None`` for null, ``MISSING`` if absent."""
        return self._props.get(name.lower(), MISSING)

    def json_body(self) -> Any:
        """The body as a JSON object, or ``_BAD`` when it is not JSON with a supported encoding."""
        if self._json is None:
            self._json = self._parse()
        return self._json

    def _parse(self) -> Any:
        content_type = self._sys.get("contenttype")
        encoding = _ENCODINGS.get(str(self._sys.get("contentencoding") or "").lower())
        if not isinstance(content_type, str) or content_type.lower() != "application/json":
            return _BAD
        if encoding is None:
            return _BAD
        try:
            doc = json.loads(self.body.decode(encoding, errors="replace").lstrip("\ufeff"))
        except (ValueError, RecursionError):
            return _BAD
        return doc if isinstance(doc, dict) else _BAD

    def query(self, steps: tuple[tuple[str, int | None], ...]) -> Any:
        """Follow a parsed JSON path: the value, ``MISSING``, or ``_BAD`` (body not queryable)."""
        node = self.json_body()
        if node is _BAD:
            return _BAD
        for name, index in steps:
            if not isinstance(node, dict) or name not in node:
                return MISSING
            node = node[name]
            if index is not None:
                if not isinstance(node, list) or index >= len(node):
                    return MISSING
                node = node[index]
        return node


def is_bad(value: Any) -> bool:
    return value is _BAD
