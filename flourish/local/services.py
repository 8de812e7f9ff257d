"""The four services as local processes: start them detached, wait until ready, stop them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from flourish.local import (
    ComponentStatus,
    InfraError,
    cmdline_contains,
    process_alive,
    progress,
    read_pid,
    run_sync,
    stop_process,
    tail,
)
from shared.settings import PROJECT_ROOT, Settings

SERVICES: dict[str, int] = {"assessment": 8101, "planning": 8102, "consent": 8103, "reporting": 8104}
READY_TIMEOUT_S = 90.0
# The plain asyncio loop, not uvloop: writing to a socket the broker has closed raises RuntimeError
# under uvloop, which aiokafka does not catch (aio-libs/aiokafka#1038): after a broker restart a
# consumer's group coordinator dies for good and the consumer never reads again. The Dockerfile
# and the Kubernetes manifests pass the same flag.
UVICORN_LOOP = ("--loop", "asyncio")


# The web and the dev OpenID provider it signs in with (development only): no database, no Kafka;
# started after the four services, on these ports unless told others.
FRONT: dict[str, tuple[str, int]] = {"oidc": ("flourish.local.oidc:app", 8106), "web": ("services.web.app:app", 8105)}


@dataclass(frozen=True)
class ServiceProcess:
    name: str
    port: int
    folder: Path
    app_module: str | None = None  # what uvicorn runs; default services.<name>.app:app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.folder / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.folder / f"{self.name}.log"

    @property
    def module(self) -> str:
        return self.app_module or f"services.{self.name}.app:app"


def service_processes(settings: Settings) -> list[ServiceProcess]:
    """Each service listens on the port of its URL in the settings (FLOURISH_ASSESSMENT_URL, ...),
    so peers find it where it runs; the defaults are the ports in SERVICES."""
    folder = settings.state_dir / "services"
    return [ServiceProcess(name, _port_of(settings, name), folder) for name in SERVICES]


def peer_environment(settings: Settings) -> dict[str, str]:
    """The environment that tells every service where its peers are."""
    return {f"FLOURISH_{name.upper()}_URL": getattr(settings, f"{name}_url") for name in SERVICES}


def platform_environment(settings: Settings) -> dict[str, str]:
    """Everything a service process needs to join the platform these settings describe: the
    servers, the state folder (dev issuer keys, dev secrets), the topic prefix, where the peers are,
    and where spans go. A test or a benchmark runs a second platform beside `make up`'s with it."""
    environment = {
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "FLOURISH_STATE_DIR": str(settings.state_dir),
        # The launcher's own (its checkout is marked development); never looser than it.
        "FLOURISH_ENVIRONMENT": settings.environment,
        "FLOURISH_TOPIC_PREFIX": settings.topic_prefix,
        # Each service logs in to Kafka as itself, with the password the local broker made for it.
        "FLOURISH_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "FLOURISH_KAFKA_CREDENTIALS_DIR": str(settings.kafka_credentials_dir),
        "FLOURISH_JWKS_PATH": str(settings.jwks_path),
        **peer_environment(settings),
        # The consent service's subject-access export gathers the other services' parts.
        "FLOURISH_CONSENT_SUBJECT_ACCESS_PEERS": json.dumps(
            {name: getattr(settings, f"{name}_url") for name in SERVICES if name != "consent"}),
    }
    if settings.trace_file is not None:
        environment["FLOURISH_TRACE_FILE"] = str(settings.trace_file)
    return environment


def _port_of(settings: Settings, name: str) -> int:
    url = httpx.URL(getattr(settings, f"{name}_url"))
    return url.port or SERVICES[name]


def start_services(settings: Settings, environment: dict[str, str]) -> list[ServiceProcess]:
    """Run the migration step as the owner (`environment`'s DATABASE_URL), give each service's role
    its login, then start every service that is not running, each connected as its own role (the
    owner's URL is in no service's environment), and wait for all of them to be ready."""
    from flourish.local.migrate import migrate
    from flourish.local.postgres import ensure_service_logins, service_database_url

    owner = settings.model_copy(update={"database_url": environment["DATABASE_URL"]})
    run_sync(lambda: migrate(owner))
    ensure_service_logins(owner, tuple(SERVICES))
    processes = service_processes(settings)
    for process in processes:
        if _running_pid(process) is None:
            _spawn(process, {**environment, "DATABASE_URL": service_database_url(owner, process.name)})
    for process in processes:
        _wait_ready(process)
    return processes


def front_processes(settings: Settings, ports: Mapping[str, int] | None = None) -> list[ServiceProcess]:
    """The dev OpenID provider and the web (`ports`: name -> port, for a platform beside `make up`'s)."""
    folder = settings.state_dir / "services"
    ports = ports or {}
    return [ServiceProcess(name, ports.get(name, port), folder, module) for name, (module, port) in FRONT.items()]


def front_environment(settings: Settings, ports: Mapping[str, int] | None = None) -> dict[str, str]:
    """What the web and the dev provider need to find each other and the four services."""
    urls = {process.name: process.url for process in front_processes(settings, ports)}
    return {
        **platform_environment(settings),
        "FLOURISH_WEB_PUBLIC_URL": urls["web"],
        "FLOURISH_WEB_OIDC_DISCOVERY_URL": f"{urls['oidc']}/.well-known/openid-configuration",
        "FLOURISH_DEV_OIDC_URL": urls["oidc"],
        "FLOURISH_DEV_OIDC_REDIRECT_URIS": json.dumps([f"{urls['web']}/auth/callback"]),
    }


def start_front(settings: Settings, environment: Mapping[str, str] | None = None,
                ports: Mapping[str, int] | None = None) -> list[ServiceProcess]:
    """Start the dev OpenID provider and the web (development only) unless running; wait for both."""
    if settings.environment == "production":
        raise InfraError("the dev OpenID provider is for development only")
    processes = front_processes(settings, ports)
    env = {**front_environment(settings, ports), **(environment or {})}
    env.pop("DATABASE_URL", None)  # neither holds data: no database address in their environment
    for process in processes:
        if _running_pid(process) is None:
            _spawn(process, env)
    for process in processes:
        _wait_ready(process)
    return processes


def stop_front(settings: Settings, ports: Mapping[str, int] | None = None) -> list[str]:
    stopped = []
    for process in front_processes(settings, ports):
        pid = _running_pid(process)
        if pid is not None:
            stop_process(pid, timeout=20)
            stopped.append(process.name)
        process.pid_file.unlink(missing_ok=True)
    return stopped


def front_status(settings: Settings) -> list[ComponentStatus]:
    statuses = []
    for process in front_processes(settings):
        pid = _running_pid(process)
        healthy = pid is not None and _ready(process)
        statuses.append(
            ComponentStatus(process.name, process.url, managed=True, pid=pid, running=pid is not None, healthy=healthy)
        )
    return statuses


def stop_services(settings: Settings) -> list[str]:
    stopped = []
    for process in service_processes(settings):
        pid = _running_pid(process)
        if pid is not None:
            stop_process(pid, timeout=20)
            stopped.append(process.name)
        process.pid_file.unlink(missing_ok=True)
    return stopped


def service_pids(settings: Settings) -> dict[str, int]:
    """The pid of every service of these settings that is running."""
    pids = {process.name: _running_pid(process) for process in service_processes(settings)}
    return {name: pid for name, pid in pids.items() if pid is not None}


def kill_service(settings: Settings, name: str) -> int | None:
    """kill -9 one service, as a crash would (no shutdown hooks, nothing flushed); its pid, or
    None if it was not running. `start_services` starts it again."""
    pid = service_pids(settings).get(name)
    if pid is None:
        return None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):  # our child (start_services spawned it): reap it, so no zombie is left
        os.waitpid(pid, os.WNOHANG)
    return pid


def services_status(settings: Settings) -> list[ComponentStatus]:
    statuses = []
    for process in service_processes(settings):
        pid = _running_pid(process)
        healthy = pid is not None and _ready(process)
        statuses.append(
            ComponentStatus(process.name, process.url, managed=True, pid=pid, running=pid is not None, healthy=healthy)
        )
    return statuses


def _spawn(process: ServiceProcess, environment: dict[str, str]) -> None:
    process.folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "uvicorn", "--factory", process.module,
        "--host", "127.0.0.1", "--port", str(process.port), "--no-access-log", *UVICORN_LOOP,
    ]
    with process.log_file.open("ab") as log:
        child = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, **environment},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    process.pid_file.write_text(f"{child.pid}\n")
    progress(process.name, f"started pid {child.pid} on {process.url}")


def _wait_ready(process: ServiceProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        pid = _running_pid(process)
        if pid is None:
            raise InfraError(f"{process.name} exited during start-up\n{tail(process.log_file)}")
        if _ready(process):
            return
        time.sleep(0.3)
    raise InfraError(f"{process.name} was not ready after {READY_TIMEOUT_S:.0f}s\n{tail(process.log_file)}")


def _ready(process: ServiceProcess) -> bool:
    try:
        return httpx.get(f"{process.url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _running_pid(process: ServiceProcess) -> int | None:
    pid = read_pid(process.pid_file)
    if pid is not None and process_alive(pid) and cmdline_contains(pid, process.module):
        return pid
    return None
