"""The edge hub: routing (IoT Edge route language), module broker, store-and-forward."""
