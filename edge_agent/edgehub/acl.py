"""Access decisions of the local broker: a module connects with its own password and may only
publish and subscribe below its own topic subtree."""

from __future__ import annotations

import hmac

from edgefleet import module_topics as t


def may_connect(expected: str | None, password: bytes | None) -> bool:
    """True when ``password`` is the module's (``expected`` is None for an unknown module)."""
    if expected is None or password is None:
        return False
    return hmac.compare_digest(expected.encode(), password)


def may_use_topic(device_id: str, module_id: str, topic: str) -> bool:
    """True when ``topic`` (or subscription filter) lies in the module's own subtree."""
    return topic.startswith(t.acl_prefix(device_id, module_id))
