"""The event store, the transactional outbox and its relay, on PostgreSQL."""
