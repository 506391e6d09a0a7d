"""``edgefleet demo``: a hub, an edge device and its modules on this machine, zero configuration.

Steps: data directory -> hub (embedded MQTT broker, SQLite) -> admin token -> IoT Edge device ->
featurizer model (built into the model store if missing) -> deployment
(simulated sensor, camera -> scoring) -> agent -> wait for the modules -> live view of what
reaches the hub -> SIGTERM to agent and hub -> summary. Every process logs to
``<data dir>/logs``; a failed step names itself and the log to read.

``session`` runs the steps, ``observed`` reads what reached the hub, ``view`` shows it,
``command`` is the CLI command, ``manifest`` the deployment.
"""
