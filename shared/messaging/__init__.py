"""Kafka for the kernel: the producer, topics, and the idempotent consumer with its dead letters."""
