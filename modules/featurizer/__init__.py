"""The featurizer module: builds models into the store and runs them (see docs/featurizer.md)."""
