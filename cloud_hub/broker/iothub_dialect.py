"""Moved to ``edgefleet.iothub_dialect`` (shared with the edge agent); kept importable here."""

from edgefleet.iothub_dialect import *  # noqa: F403
