"""Push outputs: a job's events and a live stream's records sent to webhooks and MQTT brokers
(``spec`` what a client asks, ``delivery`` the queue and retries, ``webhook`` and ``mqtt`` the
transports, ``hub`` the server's outputs on its loop, ``metrics`` their Prometheus series)."""
