"""TF-Serving API protos (edgefleet's own) and their generated modules (scripts/gen-protos)."""
