"""Secrets a development machine makes for itself (the dev token issuer's key, a dev KEK, the
audit signing key, the UPN lookup key): created once, owner-only, never half-written, and the same
for every process that starts at the same moment. Production reads its secrets from settings."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_temp(directory: Path, content: bytes) -> Path:
    """A fully written, fsynced, owner-only temp file next to its destination."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-")  # mkstemp creates it with mode 0600
    with os.fdopen(fd, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    return Path(name)


def publish_once(path: Path, content: bytes) -> None:
    """Create `path` with `content` unless it exists; readers never see a partial file.

    os.link fails if the destination exists, unlike rename, so a second process's secret never
    replaces the first one's: the first to publish wins and everyone reads that one.
    """
    temp = write_temp(path.parent, content)
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink()


def replace_atomically(path: Path, content: bytes, mode: int = 0o600) -> None:
    temp = write_temp(path.parent, content)
    temp.chmod(mode)
    os.replace(temp, path)


def dev_secret(path: Path, make: Callable[[], bytes]) -> bytes:
    """The secret at `path`, made by `make` the first time (in an owner-only folder)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        publish_once(path, make())
    return path.read_bytes()
