"""The local stack's Python API: start, inspect, restart and stop PostgreSQL and Kafka together."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url

from flourish.local import ComponentStatus, InfraError, file_lock, kafka, postgres, run_sync
from shared.settings import Settings

__all__ = [
    "ComponentStatus",
    "InfraError",
    "StackEndpoints",
    "ensure_stack",
    "restart_kafka",
    "restart_postgres",
    "stack_status",
    "stop_stack",
]

T = TypeVar("T")


@dataclass(frozen=True)
class StackEndpoints:
    """Where the services and tests find the stack."""

    database_url: str  # SQLAlchemy asyncpg form: postgresql+asyncpg://user:password@host:port/db
    kafka_bootstrap_servers: str


def ensure_stack(settings: Settings | None = None) -> StackEndpoints:
    """Start whatever is not running yet (both at once: Kafka's JVM boots while PostgreSQL
    initialises) and return the endpoints once both answer; then, as Kafka's admin, make the
    platform's topics (settings.topic_prefix) and apply the services' ACLs (flourish/kafka_acls.py).
    Safe to call any number of times."""
    settings = settings or Settings()
    with file_lock(_lock_path(settings)):
        _in_parallel(lambda: postgres.ensure_postgres(settings), lambda: kafka.ensure_kafka(settings))
        if not kafka.is_external(settings):  # an external broker's topics and users are its operator's
            from flourish.kafka_acls import provision

            run_sync(lambda: provision(settings))
    return endpoints(settings)


def stop_stack(settings: Settings | None = None) -> list[str]:
    """Stop what this launcher started (never an external server); the names of what stopped."""
    settings = settings or Settings()
    with file_lock(_lock_path(settings)):
        stopped = _in_parallel(lambda: postgres.stop_postgres(settings), lambda: kafka.stop_kafka(settings))
    return [name for name, was_running in zip(("postgres", "kafka"), stopped, strict=True) if was_running]


def stack_status(settings: Settings | None = None) -> list[ComponentStatus]:
    """One entry per component: where it is, who runs it, whether it answers."""
    settings = settings or Settings()
    return _in_parallel(lambda: postgres.postgres_status(settings), lambda: kafka.kafka_status(settings))


def restart_kafka(settings: Settings | None = None, *, crash: bool = False) -> ComponentStatus:
    """Stop the broker we manage (kill -9 it with `crash`) and start it again on the same data
    (reliability tests)."""
    settings = settings or Settings()
    if kafka.is_external(settings):
        raise InfraError("kafka: KAFKA_BOOTSTRAP_SERVERS names an external broker; it is not ours to restart")
    with file_lock(_lock_path(settings)):
        kafka.stop_kafka(settings, crash=crash)
        return kafka.ensure_kafka(settings)


def restart_postgres(settings: Settings | None = None, *, crash: bool = False) -> ComponentStatus:
    """Stop the PostgreSQL server we manage (kill -9 its postmaster with `crash`) and start it
    again on the same data."""
    settings = settings or Settings()
    if postgres.is_external(settings):
        raise InfraError("postgres: DATABASE_URL names an external server; it is not ours to restart")
    with file_lock(_lock_path(settings)):
        postgres.stop_postgres(settings, crash=crash)
        return postgres.ensure_postgres(settings)


def endpoints(settings: Settings) -> StackEndpoints:
    # Whatever form DATABASE_URL was given in, the services' engines want the asyncpg driver.
    url = make_url(settings.database_url).set(drivername="postgresql+asyncpg")
    return StackEndpoints(
        database_url=url.render_as_string(hide_password=False),
        kafka_bootstrap_servers=settings.kafka_bootstrap_servers,
    )


def _lock_path(settings: Settings) -> Path:
    return settings.state_dir / "stack.lock"


def _in_parallel(*jobs: Callable[[], T]) -> list[T]:
    """Run the jobs on threads, wait for all, and raise one error naming every failure."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        concurrent.futures.wait(futures)
    errors = [future.exception() for future in futures if future.exception() is not None]
    if len(errors) == 1:
        raise errors[0]  # type: ignore[misc]
    if errors:
        raise InfraError("\n\n".join(str(error) for error in errors))
    return [future.result() for future in futures]
