"""docs/deployment.md's table "Secrets and settings" is what the manifests read: each Deployment and
Job gets exactly the secrets the table names for it (as those environment variables or files, from
those secrets and keys), and no pod reads a secret the table gives to no pod (issue 17 item 4: a
trust can follow the docs to production without a secret they do not name)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from flourish.local.services import SERVICES
from tests.deploy.manifests import OVERLAYS, ROOT, Manifest
from tests.deploy.test_manifests import pod_labels

DOC = ROOT / "docs" / "deployment.md"
HEADER = "| secret / key | env var or file | read by | made by |"

Use = tuple[str, str, str]  # (env var name or "file:<path>", secret, key)


@dataclass(frozen=True)
class Row:
    secret: str
    keys: tuple[str, ...]
    targets: tuple[str, ...]  # env var names, or "file:<path>"
    readers: str


def table_rows() -> list[Row]:
    lines = DOC.read_text().splitlines()
    start = lines.index(HEADER) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        secret_cell, target_cell, readers, _ = (cell.strip() for cell in line.strip("|").split("|"))
        names = re.findall(r"`([^`]+)`", secret_cell)
        outside = re.sub(r"\([^)]*\)", "", target_cell)
        if target_cell.startswith("file"):
            targets: tuple[str, ...] = (f"file:{re.findall(r'`([^`]+)`', target_cell)[0]}",)
        else:
            targets = tuple(re.findall(r"`([^`]+)`", outside))
        rows.append(Row(names[0], tuple(names[1:]), targets, readers))
    return rows


def workloads(objects: list[Manifest]) -> dict[str, tuple[str, str]]:
    """name → (service, "service" for an api/consumers Deployment or "migrate" for a migration Job)."""
    found = {}
    for obj in objects:
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        labels = pod_labels(obj)
        component = labels.get("app.kubernetes.io/component")
        if component in ("api", "consumers", "web"):
            found[obj["metadata"]["name"]] = (labels["app.kubernetes.io/name"], "service")
        elif component == "migrate":
            found[obj["metadata"]["name"]] = (labels["app.kubernetes.io/name"], "migrate")
    return found


def readers_of(row: Row) -> set[tuple[str, str]]:
    """(service, kind) pairs the row's "read by" names (a list of: every service, migration Jobs, a
    service's name); empty for anything else (people, an operator, a command)."""
    readers: set[tuple[str, str]] = set()
    for token in (part.strip() for part in row.readers.split(",")):
        if token == "every service":
            readers |= {(service, "service") for service in SERVICES}
        elif token in ("migration Jobs", "migration Jobs only"):
            readers |= {(service, "migrate") for service in SERVICES}
        elif token in SERVICES or token == "web":
            readers.add((token, "service"))
        else:
            return set()
    return readers


def expected_uses(service: str, kind: str) -> set[Use]:
    uses: set[Use] = set()
    for row in table_rows():
        if (service, kind) not in readers_of(row):
            continue
        secret = row.secret.replace("<service>", service)
        keys = row.keys
        assert len(keys) == len(row.targets) or (len(keys) == 1 and row.targets[0].startswith("file:")), row
        uses |= {(target, secret, key) for target, key in zip(row.targets, keys, strict=True)}
    return uses


def actual_uses(obj: Manifest) -> set[Use]:
    pod = obj["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    uses: set[Use] = set()
    for container in pod["containers"]:
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                uses.add((entry["name"], ref["name"], ref["key"]))
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, f"{obj['metadata']['name']}: a whole secret as environment ({source})"
        for mount in container.get("volumeMounts", []):
            secret = volumes[mount["name"]].get("secret")
            if secret:
                items = secret.get("items")
                assert items, f"{obj['metadata']['name']}: secret {secret['secretName']} mounted whole"
                uses |= {(f"file:{mount['mountPath']}/{item['path']}", secret["secretName"], item["key"]) for item in items}
    return uses


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_deployment_and_job_reads_exactly_the_secrets_the_table_names(overlays, overlay):
    objects = overlays[overlay]
    found = workloads(objects)
    assert len(found) == 3 * len(SERVICES) + 1  # api, consumers and migration Job per service; the web
    for obj in objects:
        if obj["kind"] not in ("Deployment", "Job") or obj["metadata"]["name"] not in found:
            continue
        service, kind = found[obj["metadata"]["name"]]
        expected, actual = expected_uses(service, kind), actual_uses(obj)
        assert actual == expected, (f"{obj['metadata']['name']}: not in docs/deployment.md's table "
                                    f"{sorted(actual - expected)}; in the table but not given {sorted(expected - actual)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_the_table_gives_to_no_pod_are_read_by_none(overlays, overlay):
    for_people = {row.secret for row in table_rows() if not readers_of(row)}
    assert {"flourish-admin", "flourish-backup-credentials", "flourish-tls"} <= for_people
    for obj in overlays[overlay]:
        if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet", "CronJob"):
            read = {secret for _, secret, _ in actual_uses(obj)}
            assert not read & for_people, f"{obj['metadata']['name']} reads {sorted(read & for_people)}"


def test_the_table_names_the_secrets_issue_17_requires():
    rows = table_rows()
    targets = {target for row in rows for target in row.targets}
    assert {"FLOURISH_DATA_KEK", "FLOURISH_LOOKUP_KEY", "FLOURISH_AUDIT_SIGNING_KEY", "FLOURISH_SERVICE_CLIENT_ID",
            "FLOURISH_SERVICE_CLIENT_SECRET", "FLOURISH_KAFKA_PASSWORD", "DB_PASSWORD",
            "file:/etc/flourish/db-ca/ca.crt", "file:/etc/flourish/kafka-ca/ca.crt"} <= targets
    assert any(row.secret == "flourish-notices-smtp" for row in rows)
    # Every row says who makes the secret: the trust (External Secrets or the CSI driver) or an operator.
    for line in DOC.read_text().splitlines()[DOC.read_text().splitlines().index(HEADER) + 2:]:
        if not line.startswith("|"):
            break
        made_by = line.strip("|").split("|")[3]
        assert re.search(r"the trust|CloudNativePG|Strimzi|cert-manager", made_by), line
