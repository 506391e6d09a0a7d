"""TF-Serving API protos (written for edgefleet) and their generated modules (scripts/gen-protos)."""
