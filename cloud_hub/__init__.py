"""Cloud hub: registry, twins, query language, deployments, MQTT service side."""
