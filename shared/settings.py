"""The settings every service and tool reads its configuration from: the kernel's `Settings`, and
`ServiceSettings`, the root of a service's settings tree (the kernel's plus the service's own
sections, each read from its own environment variables), built once when a service is made."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = PROJECT_ROOT / ".flourish"

LOCAL_DATABASE_URL = "postgresql+asyncpg://flourish:flourish@127.0.0.1:15432/flourish"
LOCAL_KAFKA_BOOTSTRAP = "127.0.0.1:19092"

# The Flourish services: the only names a `service` token's client may map to.
SERVICE_NAMES: tuple[str, ...] = ("assessment", "consent", "planning", "reporting")

# The file in a state directory that marks it as a development checkout's: the local launcher
# (`flourish infra up`, `flourish platform up`, which `make up` and `make test` run) writes it.
ENVIRONMENT_FILE = "environment"


def marked_environment(state_dir: Path) -> Literal["development", "production"]:
    """What the state directory says: development only if the launcher marked it so; anything
    else (no file, another word, an unreadable file) is production."""
    try:
        word = (state_dir / ENVIRONMENT_FILE).read_text().strip()
    except OSError:
        return "production"
    return "development" if word == "development" else "production"


def mark_development(state_dir: Path) -> None:
    """Mark a local checkout's state directory as development (the launcher only)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / ENVIRONMENT_FILE).write_text("development\n")


# Role names a claim mapping may grant: every Flourish role except `service`, which only a known
# service client's token carries (shared/auth.py `principal_from_claims`).
MAPPABLE_ROLES: frozenset[str] = frozenset({"practitioner", "senco", "trust_admin", "auditor", "dpo", "admin"})


class ClaimMapping(BaseModel):
    """How an OpenID Connect provider's token claims become a Flourish principal.

    `roles_claim` names the claim holding roles or groups (a dotted path reaches into objects:
    "realm_access.roles"). With `groups_to_roles` empty its values are Flourish role names; with
    it set, each value is a group mapped to the roles listed, and a group not listed grants
    nothing. `trust_claim` holds the trust's id, `academies_claim` the academies' ids (a list). Nothing here can grant `service`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    roles_claim: str = "roles"
    groups_to_roles: dict[str, list[str]] = Field(default_factory=dict)
    trust_claim: str = "trust_id"
    academies_claim: str = "academy_ids"

    @field_validator("groups_to_roles")
    @classmethod
    def _known_roles(cls, mapping: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted({role for roles in mapping.values() for role in roles if role not in MAPPABLE_ROLES})
        if unknown:
            raise ValueError(f"FLOURISH_AUTH_CLAIMS maps groups to {unknown}: each role must be one of "
                             f"{sorted(MAPPABLE_ROLES)}")
        return mapping


class Settings(BaseSettings):
    """Kernel settings. Environment variables win; names without a prefix are the ones trust IT
    already expects (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS); the rest carry FLOURISH_."""

    model_config = SettingsConfigDict(env_prefix="FLOURISH_", extra="ignore")

    database_url: str = Field(default=LOCAL_DATABASE_URL, validation_alias="DATABASE_URL")
    kafka_bootstrap_servers: str = Field(
        default=LOCAL_KAFKA_BOOTSTRAP, validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    state_dir: Path = STATE_DIR

    # How a client authenticates to Kafka (shared/messaging/clients.py makes every client with
    # these). In development, with no username and password set, a service logs in as itself and
    # tools and tests as `admin`, with the passwords `flourish infra up` made under
    # state_dir/kafka/credentials/; a deployment sets its KafkaUser's name and password.
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "SASL_PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_username: str | None = None
    kafka_password: str | None = Field(default=None, repr=False)
    kafka_ca_file: Path | None = None  # the CA that signed the brokers' certificates (SASL_SSL, SSL)
    # Where development passwords are read (default: state_dir/kafka/credentials, beside the local
    # broker): kept when a test gives a service a state_dir of its own.
    kafka_credentials_dir: Path | None = None

    # Auth: where the public keys that sign bearer tokens come from. A URL (an OIDC provider's
    # JWKS endpoint) or a local file (the dev issuer's); the local dev issuer is the default.
    jwks_url: str | None = None
    jwks_path: Path | None = None  # default: the dev issuer's, under state_dir
    token_issuer: str = "flourish-dev"
    token_audience: str = "flourish"
    # Which claims of the identity provider's access tokens say who the caller is
    # (FLOURISH_AUTH_CLAIMS, JSON; shared/auth.py `ClaimMapping`): the claim holding roles or
    # groups, an optional groups -> roles map, and the trust and academy claims. The default reads
    # Flourish's own claims (roles, trust_id, academy_ids), as the dev issuer signs them.
    auth_claims: ClaimMapping = Field(default_factory=lambda: ClaimMapping())

    # Service-to-service calls (shared/peers.py): where the other services are, and how this one
    # gets a token for them from the identity provider (client credentials) outside development.
    assessment_url: str = "http://127.0.0.1:8101"
    planning_url: str = "http://127.0.0.1:8102"
    consent_url: str = "http://127.0.0.1:8103"
    reporting_url: str = "http://127.0.0.1:8104"
    # Data keys travel between services: in production either every peer URL is https, or the
    # cluster encrypts pod-to-pod traffic itself (a service mesh with mutual TLS) and says so here.
    mesh_mtls: bool = False
    service_token_url: str | None = None
    # This service's own client at the identity provider (each service's deployment has its own).
    service_client_id: str | None = None
    service_client_secret: str | None = None
    # Which service each identity-provider client is, for the tokens this service accepts
    # (FLOURISH_SERVICE_CLIENTS, JSON: {"<idp client id>": "planning", ...}). A `service` token
    # whose client_id (RFC 9068; or azp) is not listed is refused. In development the dev issuer
    # signs client_id=<service name> itself, so each service name also maps to itself there.
    service_clients: dict[str, str] = Field(default_factory=dict)

    # The local stack launcher (flourish/local) starts, restarts and stops the servers these
    # addresses name even when they are not the defaults: a second stack in its own state_dir
    # (reliability tests kill and restart it). Off, a non-default address is someone else's.
    manage_stack: bool = False

    # Kafka topics are "<prefix><context>"; a test run or a second platform on one cluster
    # takes a prefix of its own.
    topic_prefix: str = "flourish."

    # "production" refuses every development convenience (the dev token issuer's keys, generated
    # keys, plain http) and validates every required setting at start (shared/production.py). It is
    # the default: FLOURISH_ENVIRONMENT when set, else what `<state_dir>/environment` says (the local
    # launcher writes "development" there), else production.
    environment: Literal["development", "production"] = "production"

    # What this process runs: "all" (API, consumers, background tasks), "api" (the HTTP API and
    # the outbox relay), or "consumers" (consumers and background tasks; health and metrics only
    # over HTTP). Kubernetes scales the two halves separately.
    role: Literal["all", "api", "consumers"] = "all"

    # Kernel behaviour.
    db_pool_size: int = Field(default=10, ge=1)  # per process; as many again may overflow
    # A pooled connection older than this is closed and replaced at its next checkout (no ping per
    # checkout: see shared/store/db.py).
    db_pool_recycle_s: float = Field(default=1800.0, gt=0)
    # Verified bearer tokens each service process remembers (LRU; see shared/verified_tokens.py).
    token_cache_size: int = Field(default=4096, ge=1)
    relay_batch_size: int = 1000
    relay_poll_interval_s: float = 0.5
    consumer_max_attempts: int = 5
    consumer_backoff_base_s: float = 0.2
    consumer_backoff_max_s: float = 5.0
    # A record larger than this (key, value and headers) is dead-lettered before it is parsed:
    # no event the services publish comes near it (the event store refuses data over 900 000).
    consumer_max_record_bytes: int = Field(default=1_000_000, ge=1024)
    # How long a command's stored answer (Idempotency-Key) is kept for a retry to find. An answer
    # may repeat personal data in clear (a plan's activities), so it is not kept for ever: after
    # this, a retry with the same key runs the command afresh. Erasure removes a pupil's at once.
    idempotency_retention_s: float = Field(default=24 * 3600, gt=0)

    # Telemetry.
    otlp_endpoint: str | None = None
    trace_file: Path | None = None  # spans as JSON lines (local runs, end-to-end tests)
    log_level: str = "INFO"

    @field_validator("service_clients")
    @classmethod
    def _clients_name_services(cls, clients: dict[str, str]) -> dict[str, str]:
        unknown = sorted({name for name in clients.values() if name not in SERVICE_NAMES})
        if unknown:
            raise ValueError(f"FLOURISH_SERVICE_CLIENTS maps to unknown services {unknown}: "
                             f"each value must be one of {list(SERVICE_NAMES)}")
        return clients

    def known_service_clients(self) -> dict[str, str]:
        """Identity-provider client id -> service name, for verifying `service` tokens: the
        configured mapping; in development each service's own name too (the dev issuer's)."""
        own = {} if self.environment == "production" else {name: name for name in SERVICE_NAMES}
        return {**own, **self.service_clients}

    @model_validator(mode="before")
    @classmethod
    def _environment_from_state_dir(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("environment") is None:
            state_dir = data.get("state_dir") or STATE_DIR
            data = {**data, "environment": marked_environment(Path(state_dir))}
        return data

    @model_validator(mode="after")
    def _dev_issuer_beside_state(self) -> Settings:
        if self.jwks_path is None:
            self.jwks_path = self.state_dir / "dev-issuer" / "jwks.json"
        if self.kafka_credentials_dir is None:
            self.kafka_credentials_dir = self.state_dir / "kafka" / "credentials"
        return self

    @property
    def sync_database_url(self) -> str:
        """The same server for tools that speak libpq directly (asyncpg, psql)."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://")


class ServiceSettings(BaseModel):
    """The root of one service's settings tree. Each service subclasses it in its app.py with a
    field per section (`consent: ConsentSettings`, `audit: AuditSettings`, …): a section left out
    is read from the environment, under the same variable names as always. Built once by the
    service's `app()` and passed down; nothing below it constructs settings."""

    model_config = ConfigDict(frozen=True)

    kernel: Settings = Field(default_factory=Settings)

    def production_problems(self) -> list[str]:
        """What this service's own sections need in production and lack (its KEK, its keys): each
        service's tree names its own; the kernel's are shared.production's. Never a value."""
        return []

    @classmethod
    def of(cls, settings: ServiceSettings | Settings | None) -> Self:
        """The tree given; or, from the kernel's Settings alone (or nothing), a tree whose sections
        are read from the environment."""
        if isinstance(settings, cls):
            return settings
        if isinstance(settings, ServiceSettings):
            raise TypeError(f"{type(settings).__name__} is not {cls.__name__}")
        return cls(kernel=settings or Settings())
