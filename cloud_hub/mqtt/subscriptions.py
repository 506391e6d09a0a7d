"""Which topic filters a hub process subscribes to, and under which client id.

One hub process subscribes to every hub topic under the client id ``$edgefleet-hub``. Several
hub processes on one broker (``hub serve --instance NAME`` on each) each connect under their own
persistent session (``$edgefleet-hub-NAME``) and split the work with shared subscriptions
(``$share/edgefleet-hub/<filter>``, which mosquitto serves to MQTT 3.1.1 clients too): the broker
hands each telemetry message and twin request to one of them. Two kinds of message every process
must see itself, so those filters stay plain: method responses (only the process that sent the
request waits for its answer) and presence (each process answers "is this device online?" for
the method calls it sends).
"""

from __future__ import annotations

import re

from edgefleet import protocol as p

SHARE_GROUP = "edgefleet-hub"
INSTANCE_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_EVERY_PROCESS = ("/methods/res/#", "/presence")


def validate_instance(name: str) -> str:
    """An instance name (letters, digits, ``-``, ``_``; 1-32); ValueError otherwise."""
    if not INSTANCE_RE.fullmatch(name):
        raise ValueError(f"instance name {name!r}: 1-32 letters, digits, '-' or '_'")
    return name


def client_id(instance: str | None) -> str:
    """The service client's id: one persistent session per hub process."""
    return p.HUB_USERNAME if not instance else f"{p.HUB_USERNAME}-{instance}"


def hub_filters(instance: str | None) -> list[str]:
    """The hub's subscriptions; shared, except what each process must see, with an instance."""
    if not instance:
        return list(p.HUB_SUBSCRIPTIONS)
    return [
        f if f.endswith(_EVERY_PROCESS) else f"$share/{SHARE_GROUP}/{f}"
        for f in p.HUB_SUBSCRIPTIONS
    ]
