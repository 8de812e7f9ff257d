"""Every image the deployment runs is named by an exact version (issue 17 item 5), and
deploy/tools/pin-images.py pins such names by digest: here its parsing and rewriting, with a
resolver that answers from a table instead of a registry (no network)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.manifests import K8S, OVERLAYS, ROOT, Manifest, name_of

SCRIPT = ROOT / "deploy" / "tools" / "pin-images.py"


def load_pin_images() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pin_images", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


pin_images = load_pin_images()


def image_references(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every `image` / `imageName` string anywhere in an object, with where it is."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("image", "imageName") and isinstance(item, str):
                found.append((f"{path}/{key}", item))
            else:
                found += image_references(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += image_references(item, f"{path}/{index}")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_in_the_rendered_overlays_names_an_exact_version(overlays: dict[str, list[Manifest]], overlay):
    references = [(name_of(obj), where, ref) for obj in overlays[overlay] for where, ref in image_references(obj)]
    assert len(references) > 10  # the services' pods, the jobs, the collector, the databases
    for obj, where, text in references:
        reference = pin_images.Reference.parse(text)
        assert reference.exact, f"{obj} {where}: {text} is not an exact version"
        assert reference.digest is None or pin_images.DIGEST.match(reference.digest), f"{obj} {where}: {text}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_operators_run_the_versions_named_here(overlays: dict[str, list[Manifest]], overlay):
    """Strimzi chooses its Kafka image from spec.kafka.version, CloudNativePG its PostgreSQL from
    spec.imageName: both named, so an operator upgrade changes neither on its own."""
    for obj in overlays[overlay]:
        if obj["kind"] == "Kafka":
            assert re.fullmatch(r"\d+\.\d+\.\d+", obj["spec"]["kafka"]["version"])
        if obj["kind"] == "Cluster":
            reference = pin_images.Reference.parse(obj["spec"]["imageName"])
            assert reference.exact and reference.digest, name_of(obj)


@pytest.mark.parametrize(("text", "exact"), [
    ("otel/opentelemetry-collector-contrib:0.128.0", True),
    ("ghcr.io/cloudnative-pg/postgresql:18.3-202602261638-system-bookworm@sha256:" + "a" * 64, True),
    ("python:3.11.9-slim-bookworm", True),
    ("registry.example:5000/team/app:1.2.3", True),
    ("python:3.11-slim", False),          # floating: moves with every patch release
    ("postgres:18", False),
    ("busybox:latest", False),
    ("busybox", False),
    ("registry.example:5000/team/app", False),  # the port is not a tag
])
def test_a_reference_is_exact_only_with_a_full_version(text, exact):
    assert pin_images.Reference.parse(text).exact is exact


MANIFEST = """\
spec:
  containers:
    - name: a
      image: otel/opentelemetry-collector-contrib:0.128.0   # the collector
    - name: b
      image: "ghcr.io/example/tool:1.2.3"
    - name: c
      image: flourish
    - name: d
      image: busybox:latest
  imageName: ghcr.io/cloudnative-pg/postgresql:18.3-202602261638-system@sha256:{old}
"""


def fake_registry(table: dict[str, str]) -> Any:
    asked: list[str] = []

    def resolve(reference: str) -> str:
        asked.append(reference)
        return table[reference]
    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def test_the_pin_script_pins_exact_tags_by_digest_and_refuses_floating_ones():
    old, new_a, new_b, new_c = "0" * 64, "a" * 64, "b" * 64, "c" * 64
    resolve = fake_registry({"otel/opentelemetry-collector-contrib:0.128.0": f"sha256:{new_a}",
                             "ghcr.io/example/tool:1.2.3": f"sha256:{new_b}",
                             "ghcr.io/cloudnative-pg/postgresql:18.3-202602261638-system": f"sha256:{new_c}"})
    text, findings = pin_images.pin_text(MANIFEST.format(old=old), resolve)
    assert f"image: otel/opentelemetry-collector-contrib:0.128.0@sha256:{new_a}   # the collector\n" in text
    assert f'image: "ghcr.io/example/tool:1.2.3@sha256:{new_b}"\n' in text
    assert "image: flourish\n" in text  # Kustomize's name for the overlays' `images:`, left to it
    assert "image: busybox:latest\n" in text  # refused, not pinned
    assert f"@sha256:{old}\n" in text  # already pinned: kept unless refreshed
    assert resolve.asked == ["otel/opentelemetry-collector-contrib:0.128.0", "ghcr.io/example/tool:1.2.3"]
    problems = [f.problem for f in findings if f.problem]
    assert len(problems) == 1 and "busybox:latest" in problems[0]
    # Pinning twice changes nothing; --refresh asks again and takes the registry's answer.
    again, _ = pin_images.pin_text(text, resolve)
    assert again == text
    refreshed, _ = pin_images.pin_text(text, resolve, refresh=True)
    assert f"@sha256:{new_c}\n" in refreshed and f"@sha256:{old}" not in refreshed


def test_a_registry_that_cannot_answer_changes_nothing_and_is_reported():
    def unreachable(reference: str) -> str:
        raise OSError("no route to registry")

    def malformed(reference: str) -> str:
        return "sha256:nothex"

    source = MANIFEST.format(old="0" * 64)
    for resolve in (unreachable, malformed):
        text, findings = pin_images.pin_text(source, resolve)
        assert text == source
        assert sum(1 for f in findings if f.problem) == 3  # the two unpinned, and latest


def test_the_pin_script_rewrites_a_dockerfiles_base_image():
    dockerfile = ("FROM python:3.11.9-slim-bookworm AS build\nRUN true\n"
                  "FROM --platform=linux/amd64 python:3.11.9-slim-bookworm\nFROM scratch\n")
    resolve = fake_registry({"python:3.11.9-slim-bookworm": "sha256:" + "d" * 64})
    text, findings = pin_images.pin_text(dockerfile, resolve, dockerfile=True)
    assert text.splitlines() == [
        "FROM python:3.11.9-slim-bookworm@sha256:" + "d" * 64 + " AS build", "RUN true",
        "FROM --platform=linux/amd64 python:3.11.9-slim-bookworm@sha256:" + "d" * 64, "FROM scratch"]
    assert not [f for f in findings if f.problem]


def test_the_pin_script_reads_every_manifest_but_the_crds_and_writes_files_in_place(tmp_path: Path):
    files = pin_images.manifest_files(K8S)
    assert files and not any("crds" in p.parts for p in files)
    target = tmp_path / "deployment.yaml"
    target.write_text(MANIFEST.format(old="0" * 64))
    resolve = fake_registry({"otel/opentelemetry-collector-contrib:0.128.0": "sha256:" + "a" * 64,
                             "ghcr.io/example/tool:1.2.3": "sha256:" + "b" * 64})
    pin_images.pin_files([target], resolve, write=False)
    assert "@sha256:" + "a" * 64 not in target.read_text()  # a dry run writes nothing
    pin_images.pin_files([target], resolve, write=True)
    assert "0.128.0@sha256:" + "a" * 64 in target.read_text()


def test_the_registry_api_resolver_addresses_docker_hub_and_other_registries_as_they_expect():
    split = pin_images._split_registry  # noqa: SLF001 - the naming rules are the part worth testing offline
    assert split("python") == ("registry-1.docker.io", "library/python")
    assert split("otel/opentelemetry-collector-contrib") == ("registry-1.docker.io", "otel/opentelemetry-collector-contrib")
    assert split("ghcr.io/cloudnative-pg/postgresql") == ("ghcr.io", "cloudnative-pg/postgresql")
    assert split("registry.example:5000/team/app") == ("registry.example:5000", "team/app")
