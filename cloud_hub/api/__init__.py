"""REST routers of the hub; each module has ``install(app, hub)`` (see cloud_hub.app)."""
