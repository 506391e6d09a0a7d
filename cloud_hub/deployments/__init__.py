"""Fleet deployments: IoT Hub configurations, their assignment to devices, metrics and rollouts."""
