"""Scoring module: featurizer on an accelerator + classifier head, top-5 results per frame."""
