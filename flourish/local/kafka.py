"""Runs the local single-node KRaft Kafka broker from Maven-fetched jars with the machine's JDK.

The broker authenticates every client (SASL/SCRAM-SHA-512 on the client listener, one identity
per service plus `admin`) and authorises it with the standard authorizer: no ACL, no access. The
controller listener of this combined node speaks SASL/PLAIN with a static `controller` user (KRaft
cannot use SCRAM there: the SCRAM credentials live in the metadata the controller serves).

The broker's whole life (layout, properties, storage format, start, readiness, stop and crash) in
the order it happens, like postgres.py beside it."""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from flourish.local import (
    ComponentStatus,
    InfraError,
    cmdline_contains,
    port_open,
    process_alive,
    progress,
    read_pid,
    run_sync,
    split_host_port,
    stop_process,
    tail,
    wait_port_closed,
)
from shared.localsecrets import dev_secret, replace_atomically
from shared.messaging.clients import (
    ADMIN,
    IDENTITIES,
    SCRAM_MECHANISM,
    KafkaCredentialsMissing,
    credentials_file,
    kafka_options,
)
from shared.settings import LOCAL_KAFKA_BOOTSTRAP, PROJECT_ROOT, Settings

DEPLOY_DIR = PROJECT_ROOT / "deploy" / "local"
POM = DEPLOY_DIR / "pom.xml"
LIBS_DIR = DEPLOY_DIR / ".cache" / "kafka" / "libs"
LOG4J_CONFIG = DEPLOY_DIR / "log4j2.properties"

NODE_ID = 1
CONTROLLER = "controller"  # the broker's login to its own controller listener (SASL/PLAIN, static)
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# Small heap and upstream's G1 settings: a dev broker on a 2-core machine shares it with
# PostgreSQL, the services and the tests.
JVM_OPTS = [
    "-Xms128m",
    "-Xmx1536m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]
INSTALL_HINT = (
    "install a JDK and Maven (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless maven`), "
    "or point the project at a running broker with KAFKA_BOOTSTRAP_SERVERS=host:port"
)


@dataclass(frozen=True)
class KafkaLayout:
    """Where the broker's files live under the state directory."""

    root: Path
    host: str
    port: int

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaLayout:
        host, port = split_host_port(settings.kafka_bootstrap_servers, 9092)
        return cls(root=settings.state_dir / "kafka", host=host, port=port)

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def broker_log(self) -> Path:
        return self.root / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def cluster_id_file(self) -> Path:
        return self.root / "cluster-id"

    @property
    def sasl_marker(self) -> Path:
        """Written once the storage is formatted with the SCRAM users: a data directory without it
        predates authentication (dev state) and is formatted again."""
        return self.root / "sasl-scram-formatted"

    def password(self, identity: str) -> str:
        """The identity's password, made once (owner-only, under credentials/)."""
        return dev_secret(credentials_file(self.root.parent, identity),
                          lambda: secrets.token_urlsafe(32).encode()).decode()


def is_external(settings: Settings) -> bool:
    """KAFKA_BOOTSTRAP_SERVERS names another broker: use it, never start or stop one. Set to the
    local default (as `eval "$(flourish infra up)"` or the service launcher leave it) it still
    means ours, so that a later `up` starts it again."""
    return _explicit(settings) and settings.kafka_bootstrap_servers.strip() != LOCAL_KAFKA_BOOTSTRAP


def _explicit(settings: Settings) -> bool:
    """An address the user named for a broker of theirs (not one `manage_stack` tells us to run)."""
    return "kafka_bootstrap_servers" in settings.model_fields_set and not settings.manage_stack


# --- public operations ---------------------------------------------------------------------


def ensure_kafka(settings: Settings) -> ComponentStatus:
    """Start the broker unless it already runs (or an external one is configured); wait until
    it answers."""
    if is_external(settings):
        return _check_external(settings, settings.kafka_bootstrap_servers)
    layout = KafkaLayout.from_settings(settings)
    pid = running_pid(layout)
    if pid is not None and not layout.sasl_marker.exists():
        # Started before the broker authenticated clients: stop it; the start below formats its
        # data again with the SCRAM users (development state).
        progress("kafka", f"pid {pid} runs without SASL/SCRAM authentication: restarting it")
        stop_kafka(settings)
        pid = None
    if pid is not None:
        progress("kafka", f"already running pid {pid} on {layout.bootstrap}")
        wait_ready(settings, layout, pid)
        return _managed_status(layout, pid, healthy=True)
    if port_open(layout.host, layout.port):
        if _explicit(settings):
            # The user asked for this address explicitly and something answers there: use it.
            return _check_external(settings, layout.bootstrap)
        raise InfraError(
            f"kafka: {layout.bootstrap} is taken by a process this launcher did not start; "
            "stop it, or use it by setting KAFKA_BOOTSTRAP_SERVERS"
        )
    pid = _start(settings, layout)
    return _managed_status(layout, pid, healthy=True)


def stop_kafka(settings: Settings, *, crash: bool = False) -> bool:
    """Stop the broker this launcher started, if any. True if one was stopped. `crash` kills it
    with SIGKILL instead (reliability tests: the next start recovers its logs)."""
    layout = KafkaLayout.from_settings(settings)
    pid = running_pid(layout)
    if pid is None:
        return False
    progress("kafka", f"{'killing' if crash else 'stopping'} pid {pid}")
    # SIGTERM makes the broker shut down cleanly (flush logs, leave the quorum tidy).
    if stop_process(pid, first_signal=signal.SIGKILL if crash else signal.SIGTERM, timeout=STOP_TIMEOUT_S):
        progress("kafka", f"pid {pid} ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s; killed")
    wait_port_closed(layout.host, layout.port)
    layout.pid_file.unlink(missing_ok=True)
    return True


def kafka_status(settings: Settings) -> ComponentStatus:
    layout = KafkaLayout.from_settings(settings)
    pid = None if is_external(settings) else running_pid(layout)
    if pid is not None:
        return _managed_status(layout, pid, healthy=probe(settings, layout.bootstrap))
    if _explicit(settings):
        address = settings.kafka_bootstrap_servers
        healthy = probe(settings, address)
        running = healthy or port_open(*split_host_port(address, 9092))
        return ComponentStatus("kafka", address, False, None, running, healthy, "KAFKA_BOOTSTRAP_SERVERS")
    return ComponentStatus("kafka", layout.bootstrap, True, None, False, False, _not_running_detail(layout))


def probe(settings: Settings, bootstrap: str, timeout: float = 5.0) -> bool:
    """Whether a broker at `bootstrap` lets the admin identity in and lists at least one broker."""
    host, port = split_host_port(bootstrap, 9092)
    # A plain TCP check first: aiokafka logs an ERROR for every refused connection.
    if not port_open(host, port):
        return False
    return run_sync(lambda: _probe_async(settings, bootstrap, timeout))


# --- process management --------------------------------------------------------------------


def running_pid(layout: KafkaLayout) -> int | None:
    """The pid of the broker we started, or None; cleans a stale pid file and re-adopts a
    broker whose pid file was lost."""
    pid = read_pid(layout.pid_file)
    if pid is not None and _is_our_broker(layout, pid):
        return pid
    if pid is not None:
        progress("kafka", f"removing stale pid file (pid {pid} is gone)")
        layout.pid_file.unlink(missing_ok=True)
    orphan = _find_orphan(layout)
    if orphan is not None:
        layout.pid_file.write_text(f"{orphan}\n")
    return orphan


def _is_our_broker(layout: KafkaLayout, pid: int) -> bool:
    return process_alive(pid) and cmdline_contains(pid, str(layout.properties))


def _find_orphan(layout: KafkaLayout) -> int | None:
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "kafka.Kafka" in cmdline and str(layout.properties) in cmdline and process_alive(proc.info["pid"]):
            return int(proc.info["pid"])
    return None


def _start(settings: Settings, layout: KafkaLayout) -> int:
    java = _require_java()
    _ensure_libs()
    for folder in (layout.root, layout.data_dir, layout.logs_dir):
        folder.mkdir(parents=True, exist_ok=True)
    write_properties(layout)
    _format_storage(layout, java)
    started = time.monotonic()
    pid = _spawn(layout, java)
    wait_ready(settings, layout, pid)
    progress("kafka", f"started pid {pid} on {layout.bootstrap} ({time.monotonic() - started:.1f}s)")
    return pid


def _spawn(layout: KafkaLayout, java: str) -> int:
    command = [
        java,
        *JVM_OPTS,
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={layout.logs_dir}",
        "-cp",
        _classpath(),
        "kafka.Kafka",
        str(layout.properties),
    ]
    # Daemonise through a short-lived shell: the broker gets a session of its own (it outlives
    # the launcher and ignores its terminal's Ctrl-C) and is never our child, so no Popen
    # object is left to warn "still running" or a zombie to reap.
    script = 'log=$1; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!'
    result = subprocess.run(
        ["sh", "-c", script, "sh", str(layout.broker_log), *command],
        capture_output=True,
        text=True,
        start_new_session=True,
        cwd=layout.root,
        check=True,
    )
    pid = int(result.stdout.strip())
    layout.pid_file.write_text(f"{pid}\n")
    return pid


def wait_ready(settings: Settings, layout: KafkaLayout, pid: int, timeout: float = READY_TIMEOUT_S) -> None:
    """Block until the broker answers metadata requests; fail early if its process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            layout.pid_file.unlink(missing_ok=True)
            raise InfraError(f"kafka: broker pid {pid} exited during startup\n{_logs_tail(layout)}")
        if probe(settings, layout.bootstrap):
            return
        time.sleep(0.5)
    raise InfraError(
        f"kafka: broker pid {pid} did not answer on {layout.bootstrap} within {timeout:.0f}s\n"
        f"{_logs_tail(layout)}"
    )


def _logs_tail(layout: KafkaLayout) -> str:
    return tail(layout.broker_log) + "\n" + tail(layout.logs_dir / "server.log")


# --- files and one-off tools ---------------------------------------------------------------


def write_properties(layout: KafkaLayout) -> None:
    """Rewritten on every start so that changes here reach an existing data directory. Owner-only:
    it carries the admin's and the controller's passwords (the broker's own logins)."""
    controller = f"{layout.host}:{layout.controller_port}"
    admin, controller_password = layout.password(ADMIN), layout.password(CONTROLLER)
    settings = {
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        "controller.quorum.bootstrap.servers": controller,
        "listeners": f"CLIENT://{layout.bootstrap},CONTROLLER://{controller}",
        "advertised.listeners": f"CLIENT://{layout.bootstrap},CONTROLLER://{controller}",
        "inter.broker.listener.name": "CLIENT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        # Clients (and the broker to itself) log in with SCRAM; the broker to its controller with
        # PLAIN and the one static user the controller's JAAS names.
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "listener.name.client.sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        "listener.name.client.scram-sha-512.sasl.jaas.config":
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" password="{admin}";',
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config":
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{CONTROLLER}" password="{controller_password}" user_{CONTROLLER}="{controller_password}";',
        # No ACL, no access; only the admin (and the controller's own login) are above the ACLs.
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN};User:{CONTROLLER}",
        "log.dirs": layout.data_dir,
        # One node: every internal topic has exactly one replica.
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "num.partitions": 3,
        # Topics are made by the admin identity (the launcher, the tests' fixtures), never by a
        # client that happens to name one.
        "auto.create.topics.enable": "false",
        # Consumers in tests join a fresh group; don't make them wait 3s for more members.
        "group.initial.rebalance.delay.ms": 0,
        # Fewer threads than the defaults: two cores, one developer.
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "log.retention.hours": 168,
    }
    body = "\n".join(f"{key}={value}" for key, value in settings.items())
    replace_atomically(
        layout.properties,
        ("# Written by flourish/local/kafka.py on every `flourish infra up`; edits are overwritten.\n"
         + body + "\n").encode(),
    )


def cluster_id(layout: KafkaLayout) -> str:
    """The cluster id stored beside the data; made once, the way Kafka's Uuid.randomUuid does
    (16 random bytes, URL-safe base64 without padding, never starting with '-')."""
    if layout.cluster_id_file.exists():
        return layout.cluster_id_file.read_text().strip()
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            break
    layout.cluster_id_file.write_text(candidate + "\n")
    return candidate


def _format_storage(layout: KafkaLayout, java: str) -> None:
    """Format the data directory once, with a SCRAM user per identity; a directory formatted before
    the broker authenticated clients (no marker) is development state: formatted again, empty."""
    if (layout.data_dir / "meta.properties").exists():
        if layout.sasl_marker.exists():
            return
        progress("kafka", "the data directory predates SASL/SCRAM authentication: formatting it again (its topics are dropped)")
        shutil.rmtree(layout.data_dir)
        layout.data_dir.mkdir(parents=True)
    progress("kafka", "formatting storage with a SCRAM user per identity")
    users = [
        argument
        for identity in IDENTITIES
        for argument in ("--add-scram", f"{SCRAM_MECHANISM}=[name={identity},password={layout.password(identity)}]")
    ]
    command = [
        java,
        "-Xmx256m",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={layout.logs_dir}",
        "-cp",
        _classpath(),
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "-t",
        cluster_id(layout),
        "-c",
        str(layout.properties),
        *users,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=layout.root, check=False)
    if result.returncode != 0:
        # The output may echo the command line; never its passwords.
        shown = f"{result.stdout}{result.stderr}"
        for identity in IDENTITIES:
            shown = shown.replace(layout.password(identity), "***")
        raise InfraError(f"kafka: formatting storage failed:\n{shown}")
    layout.sasl_marker.write_text(f"{SCRAM_MECHANISM} users: {', '.join(IDENTITIES)}\n")


def _ensure_libs() -> None:
    if LIBS_DIR.is_dir() and any(LIBS_DIR.glob("*.jar")):
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError(f"kafka: the broker's jars are not in {LIBS_DIR} and `mvn` is not installed; {INSTALL_HINT}")
    progress("kafka", f"fetching broker jars with Maven into {LIBS_DIR}")
    command = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InfraError(f"kafka: `{' '.join(command)}` failed:\n{result.stdout}{result.stderr}")


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise InfraError(f"kafka: `java` is not on PATH; {INSTALL_HINT}")
    return java


def _classpath() -> str:
    # The JVM expands a trailing '*' to every jar in the folder itself.
    return str(LIBS_DIR / "*")


def _check_external(settings: Settings, bootstrap: str) -> ComponentStatus:
    if not probe(settings, bootstrap):
        raise InfraError(f"kafka: KAFKA_BOOTSTRAP_SERVERS={bootstrap} does not answer")
    progress("kafka", f"using external broker at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
    return ComponentStatus("kafka", bootstrap, False, None, True, True, "KAFKA_BOOTSTRAP_SERVERS")


def _managed_status(layout: KafkaLayout, pid: int, *, healthy: bool) -> ComponentStatus:
    return ComponentStatus("kafka", layout.bootstrap, True, pid, True, healthy, str(layout.root))


async def _probe_async(settings: Settings, bootstrap: str, timeout: float) -> bool:
    try:
        options = {**kafka_options(settings, ADMIN), "bootstrap_servers": bootstrap}
    except KafkaCredentialsMissing:  # no admin password yet: the broker is not formatted yet
        return False
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        return bool(cluster.get("brokers"))
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()


def _not_running_detail(layout: KafkaLayout) -> str:
    if port_open(layout.host, layout.port):
        return "not running; its port is taken by a process this launcher did not start"
    return "not running"
