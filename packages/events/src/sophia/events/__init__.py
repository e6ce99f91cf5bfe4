"""Sophia events: the NATS JetStream connection (streams and consumers build on it)."""
