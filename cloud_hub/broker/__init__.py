"""MQTT brokers the hub can use: embedded (amqtt), managed mosquitto, or an external URL."""
