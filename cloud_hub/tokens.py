"""REST API bearer tokens with scopes; only SHA-256 digests of the secrets are stored."""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import select

from cloud_hub.db import Database
from cloud_hub.errors import InvalidInput
from cloud_hub.models import TokenRow
from edgefleet.utctime import utc_now

SCOPE_REGISTRY_READ = "registry:read"
SCOPE_REGISTRY_WRITE = "registry:write"
SCOPE_DEPLOY = "deploy"
SCOPE_SERVICE = "service"
SCOPE_ADMIN = "admin"
SCOPES = (SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE, SCOPE_DEPLOY, SCOPE_SERVICE, SCOPE_ADMIN)
TOKEN_PREFIX = "efh_"

# What a route needs beside the scopes themselves: twins, direct methods and cloud-to-device
# messages are the service side (IoT Hub's ServiceConnect), which may not change identities.
NEED_TWIN_READ = "twins:read"
NEED_TWIN_WRITE = "twins:write"
NEED_SERVICE_CONNECT = "service:connect"
NEED_CONFIGURATION_READ = "configurations:read"

# needed -> the scopes that grant it (``admin`` grants everything and is not listed).
_GRANTED_BY: dict[str, frozenset[str]] = {
    SCOPE_REGISTRY_READ: frozenset({SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE}),
    SCOPE_REGISTRY_WRITE: frozenset({SCOPE_REGISTRY_WRITE}),
    SCOPE_DEPLOY: frozenset({SCOPE_DEPLOY}),
    SCOPE_SERVICE: frozenset({SCOPE_SERVICE}),
    NEED_TWIN_READ: frozenset({SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE, SCOPE_SERVICE}),
    NEED_TWIN_WRITE: frozenset({SCOPE_REGISTRY_WRITE, SCOPE_SERVICE}),
    NEED_SERVICE_CONNECT: frozenset({SCOPE_REGISTRY_WRITE, SCOPE_SERVICE}),
    NEED_CONFIGURATION_READ: frozenset(
        {SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE, SCOPE_DEPLOY, SCOPE_SERVICE}
    ),
}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def has_scope(granted: frozenset[str], needed: str) -> bool:
    """Whether scopes ``granted`` admit a route that needs ``needed`` (a scope or a NEED_*).

    ``admin`` grants everything; ``registry:write`` grants ``registry:read`` and, as it always
    has, twin writes, methods and cloud-to-device; ``service`` grants twins, methods and
    cloud-to-device but no identity changes.
    """
    if SCOPE_ADMIN in granted or needed in granted:
        return True
    return not granted.isdisjoint(_GRANTED_BY.get(needed, ()))


class Tokens:
    """Token store; lookups are cached briefly (CACHE_SECONDS) so requests skip the database."""

    CACHE_SECONDS = 5.0

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, frozenset[str] | None]] = {}

    def create(self, scopes: list[str], name: str = "") -> str:
        """Store a new token and return its secret (shown once)."""
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise InvalidInput(
                f"unknown scope {unknown[0]!r}" if unknown else "at least one scope is needed",
                path="scope",
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.write() as session:
            session.add(
                TokenRow(
                    name=name,
                    token_hash=_digest(token),
                    scopes=" ".join(sorted(set(scopes))),
                    created_at=utc_now(),
                )
            )
        return token

    def cached_scopes(self, token: str) -> tuple[bool, frozenset[str] | None]:
        """``(hit, scopes)`` from the cache, without touching the database."""
        cached = self._cache.get(_digest(token))
        if cached is not None and time.monotonic() - cached[0] < self.CACHE_SECONDS:
            return True, cached[1]
        return False, None

    def scopes_of(self, token: str) -> frozenset[str] | None:
        """The scopes of a token, or None when it is not known."""
        digest = _digest(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        with self.db.read_conn() as conn:
            scopes = conn.execute(
                select(TokenRow.scopes).where(TokenRow.token_hash == digest)
            ).scalar()
        result = None if scopes is None else frozenset(scopes.split())
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, result)
        return result
