"""Rendering and validating the Kubernetes manifests under deploy/k8s, offline: kustomize builds
each overlay; core objects are checked against Kubernetes' own schemas (kubernetes-validate,
strict: an unknown field is an error, as `kubectl apply` makes it), and the operators' custom
resources against the CRDs kept in deploy/k8s/crds, made strict in the same way, including the
CRDs' CEL rules (x-kubernetes-validations) that the API server would evaluate on create."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CRDS = K8S / "crds"
OVERLAYS = ("dev", "production")
# The oldest and the newest Kubernetes a trust is likely to run: an object must be valid in both.
KUBERNETES_VERSIONS = ("1.31.0", "1.35.0")

Manifest = dict[str, Any]


class RenderError(RuntimeError):
    pass


def render(kustomize: Path, folder: Path) -> list[Manifest]:
    """`kustomize build` of a folder, as a list of objects."""
    result = subprocess.run([str(kustomize), "build", str(folder)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RenderError(f"kustomize build {folder} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def name_of(obj: Manifest) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


@dataclass(frozen=True)
class CustomResourceSchema:
    group: str
    version: str
    kind: str
    schema: dict[str, Any]
    source: str


def _strict(schema: Any) -> Any:
    """Close every object schema that lists its properties, unless it keeps unknown fields on
    purpose: the API server prunes unknown fields and kubectl's strict field validation refuses
    them, so a misspelt field must fail here too."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@cache
def custom_resource_schemas() -> dict[tuple[str, str], CustomResourceSchema]:
    """(apiVersion, kind) → the served version's openAPIV3Schema, from every CRD in the repo."""
    schemas: dict[tuple[str, str], CustomResourceSchema] = {}
    for path in sorted(CRDS.rglob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", False):
                    continue
                schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                key = (f"{group}/{version['name']}", kind)
                schemas[key] = CustomResourceSchema(group, version["name"], kind, schema, str(path.relative_to(ROOT)))
    return schemas


_cel = celpy.Environment()


@cache
def _cel_program(rule: str) -> Any:
    return _cel.program(_cel.compile(rule))


def cel_errors(schema: Any, value: Any, path: str) -> Iterator[str]:
    """Evaluate every CEL rule of the schema against the value it governs, as the API server does
    on create (rules that compare with oldSelf apply only to updates and are skipped)."""
    if not isinstance(schema, dict):
        return
    for validation in schema.get("x-kubernetes-validations", []):
        rule = validation["rule"]
        if "oldSelf" in rule:
            continue
        try:
            result = _cel_program(rule).evaluate({"self": celpy.json_to_cel(value)})
        except (celpy.CELEvalError, celpy.evaluation.CELUnsupportedError) as error:
            result = error  # the API server rejects on an evaluation error too (others are bugs: they propagate)
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            yield f"at {path or '(root)'}: {validation.get('message', 'CEL rule failed')} (rule: {rule})"
    if isinstance(value, dict):
        for key, item in value.items():
            if key in schema.get("properties", {}):
                yield from cel_errors(schema["properties"][key], item, f"{path}/{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                yield from cel_errors(schema["additionalProperties"], item, f"{path}/{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from cel_errors(schema["items"], item, f"{path}/{index}")


def is_core(obj: Manifest) -> bool:
    return (obj["apiVersion"], obj["kind"]) not in custom_resource_schemas()


def validation_errors(obj: Manifest) -> Iterator[str]:
    """Every reason the object would be refused: none for a valid one."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version or not kind:
        yield f"{name_of(obj)}: no apiVersion or kind"
        return
    crd = custom_resource_schemas().get((api_version, kind))
    if crd is not None:
        validator = jsonschema.Draft4Validator(crd.schema)
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            yield f"{name_of(obj)} at {where}: {error.message} (schema {crd.source})"
        for error in cel_errors(crd.schema, obj, ""):
            yield f"{name_of(obj)} {error} (schema {crd.source})"
        return
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            yield f"{name_of(obj)}: {api_version} {kind} is neither a Kubernetes {version} kind nor a CRD in deploy/k8s/crds"
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(p) for p in error.path) or "(root)"
            yield f"{name_of(obj)} at {where}: {error.message} (Kubernetes {version})"


def all_errors(objects: list[Manifest]) -> list[str]:
    return [error for obj in objects for error in validation_errors(obj)]
