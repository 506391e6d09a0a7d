"""The hub's own MQTT front end on 8883 for mosquitto and external brokers (``server``)."""
