"""edgefleet: shared layer (CLI entry point, protocol, manifest models, config helpers)."""

__version__ = "0.1.0"
