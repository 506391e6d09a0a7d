"""JSON schemas of the ``$edgeAgent`` (1.0, 1.1) and ``$edgeHub`` (1.0, 1.1, 1.2) desired
properties, as published by SchemaStore (https://json.schemastore.org, Apache-2.0) and used by
``az iot edge deployment create`` to validate base deployments. Package data, read by
``edgefleet.deployment_check`` through importlib.resources; the files are unmodified."""
