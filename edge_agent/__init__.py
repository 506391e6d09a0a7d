"""Edge agent: provisioning, twin sync, reconciler, runtimes, edge hub, accelerators."""
