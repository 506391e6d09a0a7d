"""Shared access signatures of IoT Hub's shared access policies: parse and verify (pure).

A service token reads
``SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>&skn=<policy>`` (any order).
The signature is base64(HMAC-SHA256(base64decode(key), <sr as sent> + "\\n" + <se>)), URL-encoded;
the resource is the hub's host name (``host[:port]``, URL-encoded), optionally followed by a path
that narrows the token to the requests below it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import quote_plus, unquote, unquote_plus

SCHEME = "sharedaccesssignature"


class SasRejected(Exception):
    """The token does not admit the request; the message says why (for the error answer)."""


@dataclass(frozen=True)
class SasToken:
    resource: str  # ``sr`` as sent (URL-encoded): what was signed
    signature: str  # base64, URL-decoded
    expiry: str  # ``se`` as sent: what was signed
    key_name: str


@dataclass(frozen=True)
class PolicyKeys:
    """What verification needs of a shared access policy."""

    name: str
    primary_key: str
    secondary_key: str
    scopes: frozenset[str]


def _fields(token: str, required: tuple[str, ...]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in token.strip().split("&"):
        name, eq, value = part.partition("=")
        if not eq or name in fields:
            raise SasRejected("malformed shared access signature")
        fields[name] = value
    missing = [f for f in required if not fields.get(f)]
    if missing:
        raise SasRejected(f"shared access signature lacks {missing[0]!r}")
    if not (fields["se"].isascii() and fields["se"].isdigit()):
        raise SasRejected("the expiry 'se' must be seconds since the epoch")
    return fields


def parse(token: str) -> SasToken:
    """The fields of a token (the ``Authorization`` value after the scheme)."""
    fields = _fields(token, ("sr", "sig", "se", "skn"))
    return SasToken(
        resource=fields["sr"],
        signature=unquote(fields["sig"]),
        expiry=fields["se"],
        key_name=unquote_plus(fields["skn"]),
    )


def parse_device_token(value: str) -> SasToken:
    """A device or module token, ``SharedAccessSignature sr=...&sig=...&se=...`` (signed with the
    identity's own key, so no ``skn``), as IoT Hub's device SDKs send it as MQTT password."""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != SCHEME:
        raise SasRejected("not a shared access signature")
    fields = _fields(token, ("sr", "sig", "se"))
    return SasToken(fields["sr"], unquote(fields["sig"]), fields["se"], "")


def signature(resource: str, expiry: str, key: str) -> str:
    """base64(HMAC-SHA256(key, resource + "\\n" + expiry)) for a base64 ``key``."""
    digest = hmac.new(
        base64.b64decode(key), f"{resource}\n{expiry}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Grant:
    """A verified token: the policy that signed it, its expiry and the path prefix it is
    limited to ("" for the whole hub)."""

    policy: PolicyKeys
    expiry: int
    prefix: str


def _resource_prefix(resource: str, hosts: Collection[str]) -> str | None:
    """The path prefix of ``host[:port][/prefix]`` when the host is one of ``hosts``."""
    decoded = unquote_plus(resource).lower()
    for scheme in ("https://", "http://"):
        decoded = decoded.removeprefix(scheme)
    host, _, prefix = decoded.partition("/")
    return prefix.strip("/") if host in hosts else None


def _within(prefix: str, path: str) -> bool:
    if not prefix:
        return True
    wanted = path.lower().strip("/")
    return wanted == prefix or wanted.startswith(prefix + "/")


def still_admits(grant: Grant, now: float, path: str) -> bool:
    """Whether a token verified before admits a request to ``path`` at ``now``."""
    return grant.expiry > now and _within(grant.prefix, path)


def check_claims(
    token: SasToken,
    policies: Mapping[str, PolicyKeys],
    now: float,
    hosts: Collection[str],
    path: str,
) -> Grant:
    """What ``token`` claims, when it names a policy, has not expired at ``now`` (seconds since
    the epoch) and names the hub (one of ``hosts``, lower case) for a request to ``path``; else
    SasRejected. The signature is not checked here (``signed_by``)."""
    policy = policies.get(token.key_name)
    if policy is None:
        raise SasRejected(f"no shared access policy named {token.key_name!r}")
    prefix = _resource_prefix(token.resource, hosts)
    grant = Grant(policy, int(token.expiry), prefix or "")
    if grant.expiry <= now:
        raise SasRejected("the shared access signature has expired")
    if prefix is None or not _within(prefix, path):
        raise SasRejected("the shared access signature is for another resource")
    return grant


def signed_by(token: SasToken, policy: PolicyKeys) -> bool:
    """Whether ``token`` carries a signature made with the policy's primary or secondary key."""
    return signed_with(token, (policy.primary_key, policy.secondary_key))


def signed_with(token: SasToken, keys: Collection[str | None]) -> bool:
    """Whether ``token`` carries a signature made with one of ``keys`` (base64)."""
    # What was signed is the resource as sent; clients that encode differently than
    # quote_plus are still admitted when they sign the canonical form.
    resources = dict.fromkeys([token.resource, quote_plus(unquote_plus(token.resource))])
    given = token.signature.encode()
    for key in keys:
        if not key:
            continue
        for resource in resources:
            try:
                made = signature(resource, token.expiry, key)
            except ValueError:  # a key that is not base64
                continue
            if hmac.compare_digest(made.encode(), given):
                return True
    return False


def verify(
    token: SasToken,
    policies: Mapping[str, PolicyKeys],
    now: float,
    hosts: Collection[str],
    path: str,
) -> Grant:
    """What a token that admits a request to ``path`` at time ``now`` grants, or SasRejected:
    ``check_claims`` and ``signed_by``."""
    grant = check_claims(token, policies, now, hosts, path)
    if not signed_by(token, grant.policy):
        raise SasRejected("the shared access signature does not match the policy's keys")
    return grant
