"""CLI commands that talk to a running hub over its REST API (``--hub URL --token T``)."""
