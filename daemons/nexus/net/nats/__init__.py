"""NATS core and JetStream client on Trio streams."""
