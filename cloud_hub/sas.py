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


def parse(token: str) -> SasToken:
    """The fields of a token (the ``Authorization`` value after the scheme)."""
    fields: dict[str, str] = {}
    for part in token.strip().split("&"):
        name, eq, value = part.partition("=")
        if not eq or name in fields:
            raise SasRejected("malformed shared access signature")
        fields[name] = value
    missing = [f for f in ("sr", "sig", "se", "skn") if not fields.get(f)]
    if missing:
        raise SasRejected(f"shared access signature lacks {missing[0]!r}")
    if not fields["se"].isdigit():
        raise SasRejected("the expiry 'se' must be seconds since the epoch")
    return SasToken(
        resource=fields["sr"],
        signature=unquote(fields["sig"]),
        expiry=fields["se"],
        key_name=unquote_plus(fields["skn"]),
    )


def signature(resource: str, expiry: str, key: str) -> str:
    """base64(HMAC-SHA256(key, resource + "\\n" + expiry)) for a base64 ``key``."""
    digest = hmac.new(
        base64.b64decode(key), f"{resource}\n{expiry}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def _resource_admits(resource: str, hosts: Collection[str], path: str) -> bool:
    """``host[:port][/prefix]`` names one of ``hosts`` and, with a prefix, covers ``path``."""
    decoded = unquote_plus(resource).lower()
    for scheme in ("https://", "http://"):
        decoded = decoded.removeprefix(scheme)
    host, _, prefix = decoded.partition("/")
    if host not in hosts:
        return False
    prefix = prefix.strip("/")
    if not prefix:
        return True
    wanted = path.lower().strip("/")
    return wanted == prefix or wanted.startswith(prefix + "/")


def check_claims(
    token: SasToken,
    policies: Mapping[str, PolicyKeys],
    now: float,
    hosts: Collection[str],
    path: str,
) -> PolicyKeys:
    """The policy ``token`` names, when it has not expired at ``now`` (seconds since the epoch)
    and names the hub (one of ``hosts``, lower case) for a request to ``path``; else SasRejected.
    The signature is not checked here (``signed_by``)."""
    policy = policies.get(token.key_name)
    if policy is None:
        raise SasRejected(f"no shared access policy named {token.key_name!r}")
    if int(token.expiry) <= now:
        raise SasRejected("the shared access signature has expired")
    if not _resource_admits(token.resource, hosts, path):
        raise SasRejected("the shared access signature is for another resource")
    return policy


def signed_by(token: SasToken, policy: PolicyKeys) -> bool:
    """Whether ``token`` carries a signature made with the policy's primary or secondary key."""
    # What was signed is the resource as sent; clients that encode differently than
    # quote_plus are still admitted when they sign the canonical form.
    resources = dict.fromkeys([token.resource, quote_plus(unquote_plus(token.resource))])
    given = token.signature.encode()
    for key in (policy.primary_key, policy.secondary_key):
        for resource in resources:
            if hmac.compare_digest(signature(resource, token.expiry, key).encode(), given):
                return True
    return False


def verify(
    token: SasToken,
    policies: Mapping[str, PolicyKeys],
    now: float,
    hosts: Collection[str],
    path: str,
) -> PolicyKeys:
    """The policy that signed ``token`` for a request to ``path`` at time ``now``, or
    SasRejected: ``check_claims`` and ``signed_by``."""
    policy = check_claims(token, policies, now, hosts, path)
    if not signed_by(token, policy):
        raise SasRejected("the shared access signature does not match the policy's keys")
    return policy
