"""Flourish benchmarks: the kernel's event store and event pipeline beside raw asyncpg and aiokafka.

Run with ``make bench`` (or ``.venv/bin/python -m bench`` once the stack is up). Every figure is
printed to stdout as one JSON line with its baseline, measured in the same run on the same
PostgreSQL server and Kafka broker; progress goes to stderr. See bench/README.md.
"""
