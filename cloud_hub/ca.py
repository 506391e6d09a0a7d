"""Moved to ``edgefleet.ca`` (shared with the edge agent); kept importable here."""

from edgefleet.ca import *  # noqa: F403
