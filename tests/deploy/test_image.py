"""The image is the product, checked statically (no image can be built where the tests run).

- Python dependencies come from hash-locked files at the root: requirements.lock (runtime, test and
  build tools: `make install`) and requirements-runtime.lock (the image). Every pin carries sha256
  hashes, the two locks agree, every requirement of pyproject is pinned by a version it allows, and
  the environment running these tests has exactly the locked versions — so an edit to pyproject
  without `make lock`, or a package upgraded by hand, fails here.
- The Dockerfile installs from the lock with --require-hashes, installs what the running code looks
  up on PATH (chromium, for the report's PDF) through the project's own scripts in the runtime stage
  as root before USER, removes the apt lists, pins every FROM by exact version and digest, and runs
  as a non-root numeric user; .dockerignore lets in every file it copies.
- compose.yaml names exact image versions.
- The renderer the runtime script installs prints a report to PDF with the image's environment.

Each check is a function returning the problems it finds; the tests run it on the real files and on
planted mutants of them, so a check that stopped seeing its problem would fail too.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from services.reporting.readmodels.browser import html_to_pdf

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
MAKEFILE = ROOT / "Makefile"
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"

# What the running code finds on PATH, and the project script (with its argument) that puts it
# there in the image's runtime stage. A new `shutil.which("x")` in services/ or shared/ fails
# test_every_binary_the_code_looks_up_is_installed_by_a_project_script until x is added here and
# the Dockerfile runs the script that installs it.
RUNTIME_BINARIES = {
    "chromium": ("deploy/tools/install-chromium.sh", "--runtime"),
    "chromium-browser": ("deploy/tools/install-chromium.sh", "--runtime"),
}

# Images whose releases are numbered major.minor (PostgreSQL since 10): there, two components are
# exact. Everything else needs major.minor.patch.
TWO_PART_RELEASES = {"postgres"}
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


# ---------------------------------------------------------------------------------------------
# Lock files


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: str | None
    hashes: tuple[str, ...]


def parse_lock(text: str) -> tuple[dict[str, Pin], list[str]]:
    """The pins of a `--generate-hashes` requirements file, and the problems in its shape."""
    pins: dict[str, Pin] = {}
    problems: list[str] = []
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    if buffer:
        logical.append(buffer)
    for entry in logical:
        words = entry.split()
        hashes = tuple(w.removeprefix("--hash=") for w in words if w.startswith("--hash="))
        spec = " ".join(w for w in words if not w.startswith("--hash="))
        if spec.startswith("-"):
            problems.append(f"an option line in a lock: {spec!r}")
            continue
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        exact = [s for s in requirement.specifier if s.operator == "=="]
        if len(exact) != 1 or len(requirement.specifier) != 1 or "*" in exact[0].version:
            problems.append(f"{name}: not pinned with == ({spec!r})")
            continue
        if not hashes:
            problems.append(f"{name}: pinned without a hash")
        bad = [h for h in hashes if not DIGEST.match(h)]
        if bad:
            problems.append(f"{name}: a hash that is not sha256:<64 hex>: {bad[0]}")
        if name in pins:
            problems.append(f"{name}: pinned twice")
        pins[name] = Pin(name, exact[0].version, str(requirement.marker) if requirement.marker else None, hashes)
    return pins, problems


def _applies(pin: Pin) -> bool:
    return pin.marker is None or Marker(pin.marker).evaluate()


def _pyproject_requirements() -> dict[str, list[Requirement]]:
    project = tomllib.loads(PYPROJECT.read_text())
    build_group = project["dependency-groups"]["build"]
    return {
        "runtime": [Requirement(r) for r in project["project"]["dependencies"]],
        "test": [Requirement(r) for r in project["project"]["optional-dependencies"]["test"]],
        "build": [Requirement(r) for r in build_group],
    }


def unlocked_requirements(pins: dict[str, Pin], requirements: list[Requirement]) -> list[str]:
    """The requirements (of those that apply here) the lock does not pin, or pins outside their range."""
    problems = []
    for requirement in requirements:
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement}: not in the lock (run `make lock`)")
        elif not requirement.specifier.contains(Version(pin.version), prereleases=True):
            problems.append(f"{requirement}: the lock pins {pin.version} (run `make lock`)")
        else:
            for extra in requirement.extras:
                # The extra's own requirements must be locked too: they are what the extra adds.
                for dep in metadata.requires(requirement.name) or []:
                    dependency = Requirement(dep)
                    if dependency.marker and dependency.marker.evaluate({"extra": extra}) \
                            and not dependency.marker.evaluate({"extra": ""}) \
                            and canonicalize_name(dependency.name) not in pins:
                        problems.append(f"{requirement}: {dependency.name} (of the extra {extra}) not in the lock")
    return problems


@pytest.fixture(scope="module")
def lock() -> dict[str, Pin]:
    pins, problems = parse_lock(LOCK.read_text())
    assert not problems, problems
    return pins


@pytest.fixture(scope="module")
def runtime_lock() -> dict[str, Pin]:
    pins, problems = parse_lock(RUNTIME_LOCK.read_text())
    assert not problems, problems
    return pins


def test_every_pin_in_both_locks_is_exact_and_carries_hashes(lock, runtime_lock) -> None:
    assert len(lock) > 100 and len(runtime_lock) > 60
    for pins in (lock, runtime_lock):
        for pin in pins.values():
            assert pin.hashes, pin.name
    # Every file of a pinned version is hashed, not only this machine's: a package with
    # platform wheels (the image may be built for arm64, a developer may run macOS) has many.
    assert len(lock["pydantic-core"].hashes) > 10 and len(lock["asyncpg"].hashes) > 10


def test_the_lock_parser_refuses_what_a_hash_locked_install_would_not_take() -> None:
    good = "attrs==26.1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
    assert parse_lock(good) == ({"attrs": Pin("attrs", "26.1.0", None, ("sha256:" + "a" * 64,))}, [])
    assert any("without a hash" in p for p in parse_lock("attrs==26.1.0\n")[1])
    assert any("not pinned" in p for p in parse_lock("attrs>=26 \\\n    --hash=sha256:" + "a" * 64 + "\n")[1])
    assert any("not sha256" in p for p in parse_lock("attrs==26.1.0 --hash=md5:abc\n")[1])
    assert any("option line" in p for p in parse_lock("--extra-index-url https://example.org/simple\n")[1])


def test_the_runtime_lock_is_the_full_lock_restricted_to_the_runtime(lock, runtime_lock) -> None:
    """Same version and same hashes for every package the image installs; no test tool in the image."""
    for name, pin in runtime_lock.items():
        assert name in lock, f"{name} is in requirements-runtime.lock but not in requirements.lock"
        assert (pin.version, set(pin.hashes)) == (lock[name].version, set(lock[name].hashes)), name
    for tool in ("pytest", "mypy", "ruff", "testcontainers", "schemathesis", "uv"):
        assert tool not in runtime_lock, f"{tool} (a test or dev tool) would be in the image"


def test_every_requirement_of_pyproject_is_locked_at_a_version_it_allows(lock, runtime_lock) -> None:
    requirements = _pyproject_requirements()
    assert not unlocked_requirements(lock, [r for group in requirements.values() for r in group])
    assert not unlocked_requirements(runtime_lock, requirements["runtime"] + requirements["build"])
    # The build group is what builds the project: it must cover pyproject's [build-system].
    build_system = tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]
    assert not unlocked_requirements(lock, [Requirement(r) for r in build_system])
    assert not unlocked_requirements(runtime_lock, [Requirement(r) for r in build_system])


def test_a_requirement_added_or_raised_in_pyproject_without_make_lock_is_named(lock) -> None:
    problems = unlocked_requirements(lock, [Requirement("left-pad-never-locked>=1"), Requirement("fastapi>=99")])
    assert len(problems) == 2 and "not in the lock" in problems[0] and "the lock pins" in problems[1]


def test_this_environment_has_exactly_the_locked_versions(lock) -> None:
    """`make install` installs the lock; a version that differs means a stale venv or a stale lock."""
    differing = {}
    for name, pin in lock.items():
        if not _applies(pin):
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or Version(installed) != Version(pin.version):
            differing[name] = (pin.version, installed)
    assert not differing, f"locked vs installed (run `make install`, or `make lock` after editing pyproject): {differing}"


def test_make_installs_from_the_lock_with_hashes_and_regenerates_it() -> None:
    makefile = MAKEFILE.read_text()
    recipe = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "requirements.lock" in recipe.splitlines()[0], "the install stamp must depend on the lock"
    installs = [line for line in recipe.splitlines() if "pip install" in line]
    assert any("--require-hashes" in line and "-r requirements.lock" in line for line in installs), installs
    for line in installs:
        assert ("--require-hashes" in line and " -r " in line) or "--no-deps" in line, \
            f"an install that neither checks hashes nor stays off dependencies: {line.strip()}"
    assert "\nlock:" in makefile and "--generate-hashes" in makefile and "requirements-runtime.lock" in makefile


# ---------------------------------------------------------------------------------------------
# The Dockerfile


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped as Docker does."""
    result: list[tuple[str, str]] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buffer):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, arguments = buffer.strip().partition(" ")
        result.append((keyword.upper(), " ".join(arguments.split())))
        buffer = ""
    if buffer.strip():
        keyword, _, arguments = buffer.strip().partition(" ")
        result.append((keyword.upper(), " ".join(arguments.split())))
    return result


def dockerfile_stages(text: str) -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, arguments in dockerfile_instructions(text):
        if keyword == "ARG" and not stages and "=" in arguments:
            name, _, value = arguments.partition("=")
            args[name.strip()] = value.strip().strip('"')
        elif keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(name, base))
        elif stages:
            stages[-1].instructions.append((keyword, arguments))
    return stages


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    reference, _, digest = reference.partition("@")
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = reference.rpartition(":")
        return repository, tag, digest or None
    return reference, None, digest or None


def exact_version_problem(reference: str, *, digest_required: bool) -> str | None:
    repository, tag, digest = split_image(reference)
    if tag is None or tag == "latest":
        return f"{reference}: no exact version (a tag that moves)"
    short = repository.rsplit("/", 1)[-1]
    parts = 2 if short in TWO_PART_RELEASES else 3
    if not re.match(r"^v?\d+" + r"\.\d+" * (parts - 1) + r"(?![.\d])", tag):
        return f"{reference}: tag {tag!r} is not an exact release (needs {parts} version components)"
    if digest is not None and not DIGEST.match(digest):
        return f"{reference}: digest {digest!r} is not sha256:<64 hex>"
    if digest_required and digest is None:
        return f"{reference}: no digest"
    return None


def _script_invocations(stage: Stage, script: str) -> list[tuple[int, list[str], str]]:
    """Where a stage executes `script` (by the path it was copied to, or in place): (instruction
    index, the script's arguments, the whole RUN). A command that only names it (rm, chmod) is not a run."""
    targets = {script, f"./{script}"}
    for keyword, arguments in stage.instructions:
        if keyword == "COPY" and not arguments.startswith("--from"):
            words = [w for w in arguments.split() if not w.startswith("--")]
            if script in words[:-1]:
                targets.add(words[-1])
    runs = []
    for index, (keyword, arguments) in enumerate(stage.instructions):
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|\|\||;", arguments):
            words = command.split()
            if words and words[0] in ("bash", "sh"):
                words = words[1:]
            if words and words[0] in targets:
                runs.append((index, words[1:], arguments))
    return runs


def dockerignore_admits(dockerignore: str, path: str) -> bool:
    """Whether a path survives .dockerignore (its last matching pattern wins; '*' then '!x' re-includes)."""
    admitted = True
    for raw in dockerignore.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if pattern == "*" or path == pattern or path.startswith(pattern + "/"):
            admitted = negate
    return admitted


def dockerfile_problems(dockerfile: str, dockerignore: str, runtime_binaries: dict[str, tuple[str, str]]) -> list[str]:
    problems: list[str] = []
    stages = dockerfile_stages(dockerfile)
    if not stages:
        return ["no FROM"]
    names = {s.name for s in stages if s.name}
    directive = re.match(r"\s*#\s*syntax\s*=\s*(\S+)", dockerfile)
    if directive:
        problem = exact_version_problem(directive.group(1), digest_required=True)
        if problem:
            problems.append(f"# syntax={problem} (the frontend image is pulled like a FROM)")
    for stage in stages:
        if stage.base in names:
            continue
        problem = exact_version_problem(stage.base, digest_required=True)
        if problem:
            problems.append(f"FROM {problem}")

    for stage in stages:
        for keyword, arguments in stage.instructions:
            if keyword != "RUN":
                continue
            if re.search(r"\b(apt-get|apt|apk|yum|dnf)\s+(install|add)\b", arguments):
                problems.append(f"a package installed outside the project's scripts: RUN {arguments[:80]}")
            for command in re.split(r"&&|;", arguments):
                if re.search(r"\bpip3?\s+install\b", command) and "uninstall" not in command:
                    hashed = "--require-hashes" in command and re.search(r"\s-r\s+\S+\.lock\b", command)
                    if not hashed and "--no-deps" not in command:
                        problems.append(f"pip install without --require-hashes from a lock: {command.strip()[:100]}")

    locked = [(s, a) for s in stages for k, a in s.instructions
              if k == "RUN" and "--require-hashes" in a and "-r requirements-runtime.lock" in a]
    if not locked:
        problems.append("no `pip install --require-hashes -r requirements-runtime.lock`")

    runtime = stages[-1]
    users = [(i, a) for i, (k, a) in enumerate(runtime.instructions) if k == "USER"]
    # Everything that needs root comes before the first USER.
    first_user_at = users[0][0] if users else len(runtime.instructions)
    if not users:
        problems.append("the runtime stage has no USER (it would run as root)")
    else:
        user = users[-1][1]
        match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
        if not match:
            problems.append(f"USER {user}: not numeric (Kubernetes' runAsNonRoot cannot check a name)")
        elif int(match.group(1)) == 0 or (match.group(2) is not None and int(match.group(2)) == 0):
            problems.append(f"USER {user}: root")

    for binary, (script, argument) in sorted(runtime_binaries.items()):
        runs = _script_invocations(runtime, script)
        if not runs:
            problems.append(f"{binary}: the runtime stage does not run {script}")
            continue
        if not any(argument in script_arguments for _, script_arguments, _ in runs):
            problems.append(f"{binary}: {script} is not run with {argument}")
        if not any(index < first_user_at for index, _, _ in runs):
            problems.append(f"{binary}: {script} runs after USER (it needs root)")
        if not any(re.search(r"\brm -rf? [^&;]*/var/lib/apt/lists", run) for _, _, run in runs):
            problems.append(f"{script}: the apt lists are not removed in the same layer")
        if not dockerignore_admits(dockerignore, script):
            problems.append(f"{script}: .dockerignore keeps it out of the build context")

    for stage in stages:
        for keyword, arguments in stage.instructions:
            if keyword in ("COPY", "ADD") and "--from" not in arguments:
                for source in [w for w in arguments.split() if not w.startswith("--")][:-1]:
                    if not dockerignore_admits(dockerignore, source.rstrip("/")):
                        problems.append(f"COPY {source}: .dockerignore keeps it out of the build context")
    return list(dict.fromkeys(problems))


def _read(path: Path) -> str:
    return path.read_text()


def test_the_dockerfile_installs_from_the_lock_installs_the_pdf_renderer_pins_its_base_and_runs_as_non_root() -> None:
    assert dockerfile_problems(_read(DOCKERFILE), _read(DOCKERIGNORE), RUNTIME_BINARIES) == []


def test_the_runtime_stage_runs_the_same_chromium_script_the_tests_run() -> None:
    runtime = dockerfile_stages(_read(DOCKERFILE))[-1]
    runs = _script_invocations(runtime, "deploy/tools/install-chromium.sh")
    assert runs, "the runtime stage does not run deploy/tools/install-chromium.sh"
    conftest = (ROOT / "tests/integration/reporting/readmodels/conftest.py").read_text()
    assert "deploy/tools/install-chromium.sh" in conftest
    script = (ROOT / "deploy/tools/install-chromium.sh").read_text()
    assert "--runtime" in script and "chromium" in script and "fonts-dejavu-core" in script


def test_every_binary_the_code_looks_up_is_installed_by_a_project_script() -> None:
    looked_up = set()
    for package in ("services", "shared"):
        for path in (ROOT / package).rglob("*.py"):
            looked_up |= set(re.findall(r"shutil\.which\(\s*[\"']([^\"']+)[\"']", path.read_text()))
    assert "chromium" in looked_up  # the report's PDF renderer: services/reporting/readmodels/browser.py
    missing = looked_up - set(RUNTIME_BINARIES)
    assert not missing, f"the code runs {missing}, which no script installs in the image (RUNTIME_BINARIES)"


MUTANTS = {
    "a floating base tag": ("python:3.11.16-slim-bookworm@sha256:", "python:3.11-slim-bookworm@sha256:"),
    "a latest tag": (re.compile(r"ARG PYTHON_IMAGE=\S+"), "ARG PYTHON_IMAGE=python:latest"),
    "no digest": (re.compile(r"@sha256:[0-9a-f]{64}"), ""),
    "an unhashed install": ("--require-hashes --only-binary=:all: -r requirements-runtime.lock",
                            "--only-binary=:all: -r requirements-runtime.lock"),
    "an install from pyproject": ("--no-deps --no-build-isolation .", "--no-build-isolation ."),
    "root": ("USER 10001:10001", "USER 0:0"),
    "a user name": ("USER 10001:10001", "USER flourish"),
    "no user": ("USER 10001:10001\n", ""),
    "no chromium": ("RUN /usr/local/sbin/flourish-install-chromium --runtime \\\n && ", "RUN "),
    "chromium after USER": ("USER 10001:10001\n", "USER 10001:10001\nRUN /usr/local/sbin/flourish-install-chromium --runtime\n"),
    "apt lists kept": (" \\\n && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*", ""),
    "apt-get by hand": ("RUN groupadd", "RUN apt-get install -y poppler-utils && groupadd"),
    "a floating frontend": (re.compile(r"^"), "# syntax=docker/dockerfile:1\n"),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_each_planted_fault_in_the_dockerfile_is_named(mutant: str) -> None:
    old, new = MUTANTS[mutant]
    original = _read(DOCKERFILE)
    if isinstance(old, re.Pattern):
        planted = old.sub(new, original)
    else:
        assert old in original, f"the mutant {mutant!r} no longer applies to the Dockerfile: update it"
        planted = original.replace(old, new, 1)
    if mutant == "chromium after USER":
        # Remove the real invocation too, so only the late one is left.
        planted = planted.replace("RUN /usr/local/sbin/flourish-install-chromium --runtime \\\n && ", "RUN ", 1)
    assert planted != original
    assert dockerfile_problems(planted, _read(DOCKERIGNORE), RUNTIME_BINARIES), mutant


def test_a_dockerignore_that_drops_the_script_or_the_lock_is_named() -> None:
    dockerfile, ignore = _read(DOCKERFILE), _read(DOCKERIGNORE)
    for admitted in ("!deploy/tools/install-chromium.sh\n", "!requirements-runtime.lock\n"):
        assert admitted in ignore
        assert dockerfile_problems(dockerfile, ignore.replace(admitted, ""), RUNTIME_BINARIES)


def test_a_new_binary_the_code_needs_fails_until_the_image_installs_it() -> None:
    needs_more = {**RUNTIME_BINARIES, "wkhtmltopdf": ("deploy/tools/install-wkhtmltopdf.sh", "--runtime")}
    problems = dockerfile_problems(_read(DOCKERFILE), _read(DOCKERIGNORE), needs_more)
    assert any(p.startswith("wkhtmltopdf: the runtime stage does not run") for p in problems), problems


@pytest.mark.parametrize(("reference", "exact"), [
    ("python:3.11.16-slim-bookworm@sha256:" + "0" * 64, True),
    ("python:3.11.16-slim-bookworm", True),
    ("python:3.11-slim-bookworm", False),
    ("python:3", False),
    ("python", False),
    ("python:latest", False),
    ("postgres:18.6", True),
    ("postgres:18", False),
    ("apache/kafka:4.1.0", True),
    ("registry.example.org:5000/team/app:1.2.3", True),
    ("registry.example.org:5000/team/app", False),
    ("python:3.11.16@sha256:short", False),
])
def test_exact_version_rule(reference: str, exact: bool) -> None:
    assert (exact_version_problem(reference, digest_required=False) is None) is exact


# ---------------------------------------------------------------------------------------------
# compose.yaml


def compose_problems(compose: str) -> list[str]:
    problems = []
    for name, service in (yaml.safe_load(compose).get("services") or {}).items():
        image = service.get("image")
        if image is None:
            if "build" not in service:
                problems.append(f"{name}: neither image nor build")
            continue
        if "build" in service:
            continue  # built here from the Dockerfile (checked above), tagged locally
        problem = exact_version_problem(image, digest_required=False)
        if problem:
            problems.append(f"{name}: {problem}")
    return problems


def test_compose_names_exact_image_versions() -> None:
    compose = _read(COMPOSE)
    assert compose_problems(compose) == []
    images = {s.get("image") for s in yaml.safe_load(compose)["services"].values() if "build" not in s}
    assert images and all(image for image in images)


def test_a_floating_compose_image_is_named() -> None:
    planted = re.sub(r"image: postgres:\S+", "image: postgres:18", _read(COMPOSE), count=1)
    assert any(p.startswith("postgres:") for p in compose_problems(planted)), planted


# ---------------------------------------------------------------------------------------------
# The renderer the image installs, run the way the image runs it


def runtime_environment(dockerfile: str) -> dict[str, str]:
    """The ENV of the Dockerfile's runtime stage (KEY=value pairs; $PATH references left out)."""
    environment: dict[str, str] = {}
    for keyword, arguments in dockerfile_stages(dockerfile)[-1].instructions:
        if keyword == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", arguments):
                if "$" not in value:
                    environment[key] = value.strip('"')
    return environment


@pytest.fixture(scope="module")
def runtime_renderer() -> str:
    """deploy/tools/install-chromium.sh --runtime, as the image's runtime stage runs it (a no-op when
    chromium and the fonts are there); fails, never skips, when they cannot be had."""
    done = subprocess.run([str(ROOT / "deploy/tools/install-chromium.sh"), "--runtime"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


async def test_the_runtime_script_gives_a_renderer_that_prints_the_report_with_the_images_environment(
        runtime_renderer, tmp_path, monkeypatch):
    """The service's own html_to_pdf after the runtime script, with the image's environment: no
    writable home (the image's user has /nonexistent), chromium's config and cache under the
    Dockerfile's XDG_* (pointed into this test's temp dir, as /tmp is in the image). The PDF comes
    out with its fonts embedded."""
    assert Path(runtime_renderer).name in RUNTIME_BINARIES
    environment = runtime_environment(_read(DOCKERFILE))
    assert environment["XDG_CONFIG_HOME"].startswith("/tmp/") and environment["XDG_CACHE_HOME"].startswith("/tmp/")
    monkeypatch.setenv("HOME", "/nonexistent")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / environment["XDG_CONFIG_HOME"].removeprefix("/tmp/")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / environment["XDG_CACHE_HOME"].removeprefix("/tmp/")))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    html = ("<!doctype html><html><head><meta charset='utf-8'></head><body style='font-family: sans-serif'>"
            "<h1>Intervention report — “belonging” → ‘self-regulation’</h1>"
            "<svg width='200' height='60'><rect width='120' height='40' fill='#4a8'/></svg></body></html>")
    pdf = await html_to_pdf(html)
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1000
    assert b"/FontFile" in pdf and b"/BaseFont" in pdf, "no font embedded: the report's text would not print"
