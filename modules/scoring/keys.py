"""Scoring keys (Azure ML's primary/secondary key pair): ``Authorization: Bearer <key>``."""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable

PRIMARY_ENV = "SCORING_PRIMARY_KEY"
SECONDARY_ENV = "SCORING_SECONDARY_KEY"


class Keys:
    """The accepted keys; with none configured every caller is accepted."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [k.encode() for k in keys if k]

    @classmethod
    def from_env(cls) -> Keys:
        return cls([os.environ.get(PRIMARY_ENV, ""), os.environ.get(SECONDARY_ENV, "")])

    @classmethod
    def parse(cls, text: str | None) -> Keys:
        """``K1,K2`` (from ``--keys``); ``None`` reads the environment instead."""
        if text is None:
            return cls.from_env()
        return cls(k.strip() for k in text.split(","))

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def check_bearer(self, header: str | None) -> bool:
        """True for ``Bearer <a configured key>``; compares against every key in constant time."""
        if not self._keys:
            return True
        scheme, _, token = (header or "").partition(" ")
        given = token.strip().encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, key)
        return matched and scheme.lower() == "bearer"
