"""Shared access policies (IoT Hub's ``iothubowner``, ``service``, ...): the store and the
mapping of IoT Hub's rights onto the hub's scopes.

Migration 0006 creates the four policies an IoT hub starts with; ``edgefleet hub policy`` adds
more and rotates keys. A running hub keeps the policies in memory for CACHE_SECONDS and reads them
again early when a token does not verify, so a new policy or key works at once and a rotated-away
key is refused by every hub process within CACHE_SECONDS.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections.abc import Iterable

from sqlalchemy import select

from cloud_hub.db import Database
from cloud_hub.errors import AlreadyExists, InvalidInput, NotFound
from cloud_hub.models import AccessPolicyRow
from cloud_hub.settings import HubSettings
from cloud_hub.tokens import (
    SCOPE_DEPLOY,
    SCOPE_REGISTRY_READ,
    SCOPE_REGISTRY_WRITE,
    SCOPE_SERVICE,
    SCOPES,
)
from edgefleet import sas
from edgefleet.sas import Grant, PolicyKeys
from edgefleet.utctime import utc_now

# IoT Hub's rights, as the scopes that grant the same operations here.
RIGHTS: dict[str, tuple[str, ...]] = {
    "registryread": (SCOPE_REGISTRY_READ,),
    "registrywrite": (SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE),
    "serviceconnect": (SCOPE_SERVICE, SCOPE_DEPLOY),
}
_NAME = re.compile(r"[A-Za-z0-9._\-]{1,64}")


def new_key() -> str:
    """A policy key as IoT Hub makes them: 32 random bytes, base64."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def parse_permissions(values: Iterable[str]) -> frozenset[str]:
    """Scopes from permissions given as scopes (``registry:read``, ``service``, ``admin``...)
    or IoT Hub rights (``RegistryRead``, ``RegistryWrite``, ``ServiceConnect``), comma- or
    space-separated."""
    scopes: set[str] = set()
    for value in values:
        for item in re.split(r"[,\s]+", value.strip()):
            if not item:
                continue
            if item in SCOPES:
                scopes.add(item)
            elif item.lower() in RIGHTS:
                scopes.update(RIGHTS[item.lower()])
            elif item.lower() == "deviceconnect":
                raise InvalidInput(
                    "DeviceConnect is not a policy right here: devices use their own keys",
                    path="permissions",
                )
            else:
                raise InvalidInput(f"unknown permission {item!r}", path="permissions")
    if not scopes:
        raise InvalidInput("at least one permission is needed", path="permissions")
    return frozenset(scopes)


def resource_hosts(settings: HubSettings) -> frozenset[str]:
    """The ``sr`` host names a SAS token may name: the public host name and the bind address,
    bare or with the HTTPS or HTTP port (lower case)."""
    names = {settings.resolved_public_host_name(), settings.host}
    ports = [p for p in (settings.tls_port, settings.port) if p]
    hosts = {n.lower() for n in names if n not in ("", "0.0.0.0", "::")}
    return frozenset(hosts | {f"{h}:{p}" for h in hosts for p in ports})


def _keys(row: AccessPolicyRow) -> PolicyKeys:
    return PolicyKeys(
        name=row.name,
        primary_key=row.primary_key,
        secondary_key=row.secondary_key,
        scopes=frozenset(row.scopes.split()),
    )


class AccessPolicies:
    """The policy store of one hub; ``hosts`` are the ``sr`` host names its tokens may name."""

    CACHE_SECONDS = 5.0
    RELOAD_SECONDS = 1.0

    def __init__(self, db: Database, hosts: frozenset[str] = frozenset()) -> None:
        self.db = db
        self.hosts = hosts
        self._cache: tuple[float, dict[str, PolicyKeys]] | None = None
        # verified tokens (against the current snapshot), so a client reusing its token skips
        # the parse and the HMAC
        self._granted: dict[str, Grant] = {}

    def cached(self) -> dict[str, PolicyKeys] | None:
        """The policies when read less than CACHE_SECONDS ago, without touching the database."""
        cache = self._cache
        if cache is not None and time.monotonic() - cache[0] < self.CACHE_SECONDS:
            return cache[1]
        return None

    def verify(self, token: str, now: float, path: str) -> PolicyKeys:
        """The policy that signed ``token`` (the ``Authorization`` value after the scheme) for a
        request to ``path`` at ``now``, verified against the loaded policies; SasRejected. A
        token verified before is only checked for its expiry and path. Call after ``load``."""
        grant = self._granted.get(token)
        if grant is not None and sas.still_admits(grant, now, path):
            return grant.policy
        assert self._cache is not None
        grant = sas.verify(sas.parse(token), self._cache[1], now, self.hosts, path)
        if len(self._granted) >= 10_000:
            self._granted.clear()
        self._granted[token] = grant
        return grant.policy

    def may_reload(self) -> bool:
        """Whether the cache is old enough (RELOAD_SECONDS) to be read again early."""
        cache = self._cache
        return cache is None or time.monotonic() - cache[0] >= self.RELOAD_SECONDS

    def load(self) -> dict[str, PolicyKeys]:
        """All policies by name, read from the database (and cached)."""
        with self.db.read() as session:
            rows = session.scalars(select(AccessPolicyRow)).all()
            policies = {row.name: _keys(row) for row in rows}
        self._cache = (time.monotonic(), policies)
        self._granted = {}
        return policies

    def list(self) -> list[PolicyKeys]:
        return sorted(self.load().values(), key=lambda p: p.name.lower())

    def get(self, name: str) -> PolicyKeys:
        with self.db.read() as session:
            row = session.get(AccessPolicyRow, name)
            if row is None:
                raise NotFound(f"no shared access policy named {name!r}")
            return _keys(row)

    def create(self, name: str, scopes: frozenset[str]) -> PolicyKeys:
        if not _NAME.fullmatch(name):
            raise InvalidInput(
                "a policy name is 1-64 letters, digits, '.', '_' or '-'", path="name"
            )
        now = utc_now()
        with self.db.write() as session:
            if session.get(AccessPolicyRow, name) is not None:
                raise AlreadyExists(f"a shared access policy named {name!r} exists")
            row = AccessPolicyRow(
                name=name,
                primary_key=new_key(),
                secondary_key=new_key(),
                scopes=" ".join(sorted(scopes)),
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            policy = _keys(row)
        self._cache = None
        return policy

    def rotate(self, name: str, which: str) -> PolicyKeys:
        """A new ``primary`` or ``secondary`` key, or ``swap`` the two."""
        if which not in ("primary", "secondary", "swap"):
            raise InvalidInput("which must be primary, secondary or swap", path="which")
        with self.db.write() as session:
            row = session.get(AccessPolicyRow, name)
            if row is None:
                raise NotFound(f"no shared access policy named {name!r}")
            if which == "primary":
                row.primary_key = new_key()
            elif which == "secondary":
                row.secondary_key = new_key()
            else:
                row.primary_key, row.secondary_key = row.secondary_key, row.primary_key
            row.updated_at = utc_now()
            policy = _keys(row)
        self._cache = None
        return policy
