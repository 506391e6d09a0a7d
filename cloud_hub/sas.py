"""Moved to ``edgefleet.sas`` (shared with the edge agent); kept importable here."""

from edgefleet.sas import *  # noqa: F403
