"""The one way to build a Flourish service: a FastAPI app and a FastStream Kafka broker in one
process, whose lifespan checks the service's schema is at head (the migration step, run as the
schema's owner, brings it there: shared/store/migrations.py), builds the service's dependencies once (its
bootstrap), starts its consumers and runs its outbox relay, and which serves health, readiness,
metrics, OpenAPI and AsyncAPI.

A service declares itself in its app.py: a `ServiceSpec` (routers, consumer groups, background
tasks, errors_to_problems.PROBLEMS) and one `bootstrap`, an async context manager over the
`Runtime` that yields the service's dependencies and closes them when it stops. Routes receive
them through `dependencies_of`; consumers (`ConsumerSpec.handlers_from`), start-up steps and
background tasks are handed them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from faststream.specification.asyncapi.site import get_asyncapi_html
from sqlalchemy import MetaData, Table, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import errors_to_problems
from shared.api import caller, forget_old_stored_answers
from shared.auth import Auth, Principal, TokenVerifier
from shared.datakeys import PupilKeyring
from shared.events.envelope import topic_for
from shared.events.registry import Event, registered_types
from shared.events.sealing import EventSealing
from shared.limits import BodySizeLimit
from shared.logs import configure_logging
from shared.messaging.clients import KafkaCredentialsMissing, faststream_security, kafka_options
from shared.messaging.consumer import BatchHandler, Handler, IdempotentConsumer, RetryPolicy
from shared.messaging.producer import KafkaPublisher
from shared.messaging.subscription import subscribe
from shared.messaging.topics import audit_fact_topic, require_topics, topics_of
from shared.openapi import document_problems
from shared.problems import ServiceUnavailable, install_problem_handlers
from shared.production import ProductionMisconfigured, schema_owner_problems, validate_production
from shared.settings import Settings
from shared.store.db import create_engine
from shared.store.event_store import EventStore
from shared.store.migrations import check_at_head
from shared.store.outbox import OutboxRelay
from shared.store.tables import KernelTables
from shared.telemetry import TracingMiddleware, background_task_failures, configure_metrics, configure_tracing
from shared.tenancy import TenantScopeMiddleware
from shared.verified_tokens import VerifiedTokens

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer group of this service: which contexts' topics it reads, what it does per event."""

    name: str
    contexts: Sequence[str]
    handlers: Mapping[type[Event], Handler] = field(default_factory=dict)
    batch_handlers: Mapping[type[Event], BatchHandler] = field(default_factory=dict)
    # The service's table of (pupil_id, trust_id, academy_id): an event that claims another trust
    # for a pupil or an academy in it is dead-lettered (shared.messaging.tenancy).
    roster: Table | None = None
    # Handlers that need the service's dependencies (a keyring, the ledger): built from what the
    # bootstrap yielded, when the service starts, and added to `handlers`.
    handlers_from: Callable[[Any], Mapping[type[Event], Handler]] | None = None

    def handlers_with(self, deps: Any) -> dict[type[Event], Handler]:
        return {**self.handlers, **(self.handlers_from(deps) if self.handlers_from else {})}


Bootstrap = Callable[["Runtime"], AbstractAsyncContextManager[Any]]
"""Builds a service's dependencies once, when it starts (after its schema is found at head), yields
them, and closes them (clients, pools) when it stops."""

BackgroundTask = Callable[["Runtime", Any, asyncio.Event], Coroutine[Any, Any, None]]
"""Long-running work of a service besides its consumers (a scheduler, say), handed the runtime and
the service's dependencies: runs until the event is set. One that ends before (raising or returning)
fails liveness and readiness, so the process is restarted."""

StartupStep = Callable[["Runtime", Any], Awaitable[None]]
"""Work after the dependencies are built and before the service takes traffic (loading reference data)."""


def no_production_checks() -> list[str]:
    """The checks of a service whose own settings need nothing in production beyond the kernel's."""
    return []


@asynccontextmanager
async def no_dependencies(runtime: Runtime) -> AsyncIterator[None]:
    """The bootstrap of a service that needs nothing besides the runtime."""
    yield None


@dataclass(frozen=True)
class ServiceSpec:
    """A service, declared in its app.py: its schema, routes, consumer groups, background tasks,
    errors and the one bootstrap that builds its dependencies (the service's `app()` puts there
    the bootstrap with its settings tree and any test overrides bound)."""

    name: str
    metadata: MetaData
    tables: KernelTables
    migrations: Path
    description: str
    routers: Sequence[APIRouter] = ()
    consumers: Sequence[ConsumerSpec] = ()
    # The service's errors_to_problems.PROBLEMS; the kernel's own (shared.errors_to_problems) apply too.
    problems: Mapping[type[Exception], errors_to_problems.ProblemFactory] = field(default_factory=dict)
    bootstrap: Bootstrap = no_dependencies
    background_tasks: Sequence[BackgroundTask] = ()
    on_startup: Sequence[StartupStep] = ()
    # The service's keyring of pupils' data keys, from what its bootstrap built: the event store
    # seals the personal fields of the events it appends with it, and every consumer opens sealed
    # events with it. A service that publishes or consumes such events without one refuses to start.
    keyring: Callable[[Runtime, Any], PupilKeyring] | None = None
    # What the service's own settings lack in production (its settings tree's production_problems,
    # bound by its app()): added to the kernel's in the one start-up validation (shared/production.py).
    production_checks: Callable[[], Sequence[str]] = no_production_checks


_NOT_RUNNING = object()


class Runtime:
    """What a running service holds: its database, event store, Kafka clients and relay, and (while
    it runs) the dependencies its bootstrap built."""

    def __init__(self, spec: ServiceSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.engine: AsyncEngine = create_engine(settings)
        self.store = EventStore(spec.tables)
        # Every Kafka client of the service logs in as the service (its own ACLs: flourish/kafka_acls.py).
        try:
            self.kafka = kafka_options(settings, spec.name)
        except KafkaCredentialsMissing:
            if settings.environment != "production":
                raise
            # No client is started before validate_production, which refuses to start naming the
            # missing login among everything else that is missing (not this one alone).
            self.kafka = {"bootstrap_servers": settings.kafka_bootstrap_servers}
        self.publisher = KafkaPublisher(self.kafka, client_id=f"flourish-{spec.name}")
        self.relay = OutboxRelay(
            self.engine,
            spec.tables,
            self.publisher,
            batch_size=settings.relay_batch_size,
            poll_interval_s=settings.relay_poll_interval_s,
            topic_prefix=settings.topic_prefix,
            service=spec.name,
        )
        self.auth = Auth(TokenVerifier(settings))
        # This service's own cache of verified tokens, behind every route's `requires`/`caller`.
        self.verified_tokens = VerifiedTokens(self.auth.verifier, max_entries=settings.token_cache_size)
        # FastStream's own logger writes to stdout past our JSON formatter, and a line per batch:
        # route it through the root handler, warnings only.
        broker_log = logging.getLogger(f"flourish.{spec.name}.kafka")
        broker_log.setLevel(logging.WARNING)
        self.broker = KafkaBroker(settings.kafka_bootstrap_servers, client_id=f"flourish-{spec.name}", logger=broker_log,
                                  security=faststream_security(self.kafka))
        self._retry = RetryPolicy(settings.consumer_max_attempts, settings.consumer_backoff_base_s,
                                  settings.consumer_backoff_max_s)
        self.runs_consumers = settings.role in ("all", "consumers")
        self.consumers: list[IdempotentConsumer] = []
        self._document_published_events()
        self.sealing: EventSealing | None = None
        self._deps: Any = _NOT_RUNNING
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Tasks that ended while the service ran (name → why): liveness and readiness fail on any.
        self.dead_tasks: dict[str, str] = {}
        self.subscribers: list[tuple[str, Any]] = []  # (consumer's name, FastStream subscriber)

    @property
    def deps(self) -> Any:
        """What the service's bootstrap built, while the service runs."""
        if self._deps is _NOT_RUNNING:
            raise ServiceUnavailable("the service is not running", retry_after_s=5)
        return self._deps

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Any]:
        """Check the schema is at head (refuse to start otherwise), build the dependencies (the
        spec's bootstrap), start consumers, the relay and background tasks; on the way out stop
        them and close everything, in reverse."""
        try:
            # Before anything connects: every required setting, all missing ones named at once.
            validate_production(self.settings, self.spec.production_checks())
            schema = self.spec.metadata.schema
            assert schema, "a service's MetaData names its schema"
            if self.settings.environment == "production":
                # The first connection: the role it logs in as must not own the schema.
                owned = await schema_owner_problems(self.engine, schema)
                if owned:
                    raise ProductionMisconfigured(owned)
            await check_at_head(self.engine, self.spec.migrations, schema, self.settings)
            async with self.spec.bootstrap(self) as deps:
                self._seal_with(deps)
                for step in self.spec.on_startup:
                    await step(self, deps)
                self._subscribe(deps)
                self._deps = deps
                try:
                    await self._start(deps)
                    yield deps
                finally:
                    self._deps = _NOT_RUNNING
                    await self._stop_all()
        finally:
            await self.engine.dispose()

    def _seal_with(self, deps: Any) -> None:
        """The event store and the consumers seal and open with the service's keyring; without
        one, a service whose events (published or consumed) carry personal fields does not start."""
        keyring = self.spec.keyring(self, deps) if self.spec.keyring is not None else None
        self.sealing = EventSealing(keyring) if keyring is not None else None
        self.store.sealing = self.sealing
        if self.sealing is not None:
            return
        personal = [model.event_type for model in registered_types().values() if model.personal and (
            model.context == self.spec.name
            or any(model.context in c.contexts and model in {*c.handlers, *c.batch_handlers} for c in self.spec.consumers)
        )]
        if personal:
            names = ", ".join(sorted(personal))
            raise RuntimeError(f"{self.spec.name} publishes or consumes events with sealed fields ({names}) "
                               "but its ServiceSpec names no keyring")

    def _subscribe(self, deps: Any) -> None:
        if self.consumers:  # their handlers hold the first run's dependencies, closed since
            raise RuntimeError(f"{self.spec.name} has run once: build a new app (its app()) to run it again")
        if not self.runs_consumers:
            return
        settings = self.settings
        for spec in self.spec.consumers:
            consumer = IdempotentConsumer(
                f"{self.spec.name}.{spec.name}", self.engine, self.spec.tables, spec.handlers_with(deps), self.publisher,
                retry=self._retry, topic_prefix=settings.topic_prefix, batch_handlers=spec.batch_handlers,
                roster=spec.roster, max_record_bytes=settings.consumer_max_record_bytes, sealing=self.sealing,
            )
            subscriber = subscribe(self.broker, consumer,
                                   [t for context in spec.contexts for t in topics_of(context, settings.topic_prefix)])
            self.consumers.append(consumer)
            self.subscribers.append((consumer.name, subscriber))

    async def _start(self, deps: Any) -> None:
        # Topics are the admin's to make (flourish/kafka_acls.py); the service only checks they are there.
        prefix = self.settings.topic_prefix
        await require_topics(self.kafka, [
            topic_for(self.spec.name, prefix), audit_fact_topic(self.spec.name, prefix),
            *(topic for spec in self.spec.consumers if self.runs_consumers
              for context in spec.contexts for topic in topics_of(context, prefix)),
            *(c.dead_letter_topic for c in self.consumers),
        ])
        await self.publisher.start()
        await self.broker.start()
        self._stop.clear()
        self.dead_tasks.clear()
        self._supervise(self.relay.run(self._stop), "outbox-relay")
        self._supervise(forget_old_stored_answers(self.engine, self.spec.tables.idempotency,
                                                  self.settings.idempotency_retention_s, self._stop), "stored-answers")
        for task in self.spec.background_tasks if self.runs_consumers else ():
            self._supervise(task(self, deps, self._stop), task.__name__)

    def _supervise(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background task; if it ends while the service runs (an exception, or returning
        before stop), the service is no longer live: /healthz and /readyz answer 503 naming it,
        and it is logged and counted. Kubernetes then restarts the pod."""
        task = asyncio.create_task(work, name=f"{self.spec.name}-{name}")

        def ended(done: asyncio.Task[None]) -> None:
            if self._stop.is_set():
                return
            # The exception's type only: its message may carry a row's data.
            error = None if done.cancelled() else done.exception()
            reason = "cancelled" if done.cancelled() else type(error).__name__ if error else "returned"
            self.dead_tasks[name] = reason
            background_task_failures.add(1, {"service": self.spec.name, "task": name})
            log.error("background task %s ended while the service runs", name, extra={"error_type": reason})

        task.add_done_callback(ended)
        self._tasks.append(task)

    def dead(self) -> dict[str, str]:
        """The tasks (and consumers) that ended while the service ran, with why."""
        dead = dict(self.dead_tasks)
        if self._deps is _NOT_RUNNING or self._stop.is_set():
            return dead
        for name, subscriber in self.subscribers:  # FastStream's consume loop of each consumer
            if any(task.done() for task in getattr(subscriber, "tasks", ())):
                dead[f"consumer {name}"] = "stopped"
        return dead

    async def _stop_all(self) -> None:
        self._stop.set()
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout=15)
            self._tasks.clear()
        await self.broker.stop()
        await self.publisher.stop()

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except (SQLAlchemyError, OSError) as error:  # what a refused, unresolvable or failing database raises
            checks["database"] = type(error).__name__
        checks["kafka"] = "ok" if await self.broker.ping(timeout=2) else "unreachable"
        checks["relay"] = "leader" if self.relay.is_leader else "standby"
        dead = self.dead()
        checks["tasks"] = "ok" if not dead else "dead: " + ", ".join(sorted(dead))
        return checks

    def _document_published_events(self) -> None:
        # The relay sends with the plain producer; these publishers exist so that AsyncAPI shows
        # every event this service publishes, with its schema, on its topic.
        for event_type, model in sorted(registered_types().items()):
            if model.context == self.spec.name:
                self.broker.publisher(
                    topic_for(model.context, self.settings.topic_prefix),
                    title=event_type,
                    schema=model,
                    description=(model.__doc__ or event_type).strip(),
                )


def create_app(spec: ServiceSpec, settings: Settings) -> FastAPI:
    """The service's app: called by the service's one factory (its app.py's `app()`), which built
    `settings` (the kernel's part of its settings tree) and put its bootstrap in `spec`."""
    configure_logging(spec.name, settings.log_level)
    configure_tracing(spec.name, settings.otlp_endpoint, settings.trace_file)
    configure_metrics(spec.name)
    runtime = Runtime(spec, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running():
            log.info("service started", extra={"service": spec.name})
            yield

    # FastAPI's own tracing is off: TracingMiddleware makes the one server span per request, named
    # by the route template; FastAPI's would be a second, carrying the path and query (pupil ids).
    app = FastAPI(title=f"Flourish {spec.name}", description=spec.description, version="0.1.0", lifespan=lifespan,
                  telemetry={"tracing": False})
    app.state.runtime = runtime
    install_problem_handlers(app, {**errors_to_problems.PROBLEMS, **spec.problems})
    app.add_middleware(BodySizeLimit)  # inside tracing: a refused body still leaves its span
    app.add_middleware(TracingMiddleware)
    app.add_middleware(TenantScopeMiddleware)  # outermost: each request starts in no trust's scope
    document_problems(app)
    app.include_router(_operations_router(runtime))
    if settings.role != "consumers":  # a consumers-only pod answers health and metrics alone
        for router in spec.routers:
            app.include_router(router)
    return app


def runtime_of(request: Request) -> Runtime:
    """FastAPI dependency: the running service's database, store and clients."""
    return request.app.state.runtime  # type: ignore[no-any-return]


async def current_runtime(request: Request) -> Runtime:
    """`runtime_of` as a route's dependency: async, so FastAPI runs it without a thread-pool hop."""
    return runtime_of(request)


def dependencies_of(request: Request) -> Any:
    """FastAPI dependency: the service's dependencies, as its bootstrap built them (503 while the
    service is not running). A service's api modules read their part of it through one accessor each."""
    return runtime_of(request).deps


def _operations_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process answers and none of its background tasks has died",
                responses={503: {"description": "A background task ended: restart the process"}})
    async def healthz() -> dict[str, str]:
        dead = runtime.dead()
        if dead:
            raise ServiceUnavailable("a background task ended", extras={"dead_tasks": dead})
        return {"status": "ok", "service": runtime.spec.name}

    @router.get("/readyz", summary="Readiness: PostgreSQL and Kafka answer, every background task runs",
                responses={503: {"description": "Not ready"}})
    async def readyz() -> dict[str, Any]:
        checks = await runtime.readiness()
        if checks["database"] != "ok" or checks["kafka"] != "ok" or checks["tasks"] != "ok":
            raise ServiceUnavailable("not ready", extras={"checks": checks})
        return {"status": "ready", "checks": checks}

    @router.get("/whoami", summary="Who the bearer token says the caller is, and their scope")
    async def whoami(principal: Principal = Depends(caller)) -> dict[str, Any]:
        return {
            "subject": principal.subject,
            "roles": sorted(principal.roles),
            "trust_id": str(principal.trust_id),
            "academy_ids": sorted(str(a) for a in principal.academy_ids),
            "trust_wide": principal.trust_wide,
            "client": principal.client,
        }

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    def specification() -> Any:
        return AsyncAPI(
            runtime.broker,
            title=f"Flourish {runtime.spec.name} events",
            version="0.1.0",
            description=runtime.spec.description,
        ).to_specification()

    @router.get("/asyncapi.json", summary="AsyncAPI document of the events", include_in_schema=False)
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(specification().to_jsonable())

    @router.get("/asyncapi", summary="AsyncAPI docs", include_in_schema=False)
    async def asyncapi_html() -> HTMLResponse:
        return HTMLResponse(get_asyncapi_html(specification(), try_it_out_path=None))

    return router
