"""Every overlay of deploy/k8s renders, every object in it is valid against the Kubernetes schemas
or its operator's CRD, and the manifests keep the promises the design and the code need: two
separately scalable halves per service, non-root read-only pods with probes and limits, topics
and databases as the code expects them, secrets only by reference, default-deny networking."""

from __future__ import annotations

import hashlib
import importlib
import re
import shutil
from collections.abc import Iterable
from typing import Any

import pytest
import yaml

from flourish.local.services import SERVICES
from shared.events.envelope import topic_for
from shared.messaging.topics import audit_fact_topics, dead_letter_topic, legacy_audit_topic, platform_topics
from tests.deploy.conftest import Tools
from tests.deploy.manifests import (
    K8S,
    OVERLAYS,
    ROOT,
    Manifest,
    RenderError,
    all_errors,
    custom_resource_schemas,
    is_core,
    name_of,
    render,
)

TOPIC_PREFIX = "flourish."


def of_kind(objects: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def by_name(objects: Iterable[Manifest], kind: str) -> dict[str, Manifest]:
    return {obj["metadata"]["name"]: obj for obj in of_kind(objects, kind)}


def pod_labels(deployment: Manifest) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def service_deployments(objects: Iterable[Manifest]) -> list[Manifest]:
    return [d for d in of_kind(objects, "Deployment") if pod_labels(d).get("app.kubernetes.io/component") in ("api", "consumers")]


def container_env(deployment: Manifest) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])


def env_value(deployment: Manifest, name: str) -> Any:
    return next((e.get("value", e.get("valueFrom")) for e in container_env(deployment) if e["name"] == name), None)


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a set of labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or ():
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def service_specs() -> dict[str, Any]:
    return {name: importlib.import_module(f"services.{name}.app").SPEC for name in SERVICES}


# --- Rendering and schemas -------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_the_whole_platform(overlays, overlay):
    kinds = {obj["kind"] for obj in overlays[overlay]}
    assert {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
            "ConfigMap", "Kafka", "KafkaNodePool", "KafkaTopic", "Cluster"} <= kinds
    namespaces = {obj["metadata"].get("namespace") for obj in overlays[overlay] if obj["kind"] != "Namespace"}
    assert namespaces == {by_name(overlays[overlay], "Namespace").popitem()[0]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas_or_its_operators_crd(overlays, overlay):
    objects = overlays[overlay]
    errors = all_errors(objects)
    assert not errors, "\n".join(errors)
    custom = sorted({f"{o['apiVersion']} {o['kind']}" for o in objects if not is_core(o)})
    backups = ["postgresql.cnpg.io/v1 ScheduledBackup"] if overlay == "production" else []
    assert custom == ["kafka.strimzi.io/v1 Kafka", "kafka.strimzi.io/v1 KafkaNodePool", "kafka.strimzi.io/v1 KafkaTopic",
                      "kafka.strimzi.io/v1 KafkaUser", "postgresql.cnpg.io/v1 Cluster", *backups]


def test_the_crds_kept_in_the_repo_are_the_operators_and_say_where_they_came_from():
    schemas = custom_resource_schemas()
    for key in [("kafka.strimzi.io/v1", "Kafka"), ("kafka.strimzi.io/v1", "KafkaTopic"), ("kafka.strimzi.io/v1", "KafkaNodePool"),
                ("kafka.strimzi.io/v1", "KafkaUser"),
                ("postgresql.cnpg.io/v1", "Cluster"), ("postgresql.cnpg.io/v1", "ScheduledBackup")]:
        assert key in schemas, key
    sources = (K8S / "crds" / "SOURCES.md").read_text()
    for path in (K8S / "crds").rglob("*.yaml"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        assert f"{path.relative_to(K8S / 'crds')} ({digest}" in sources, f"{path.name} changed: run deploy/tools/refresh-crds.sh"


BREAKAGES = {  # what, in which file, which overlay shows it
    "a misspelt container field":
        ("base/service/api.yaml", "imagePullPolicy: IfNotPresent", "imagePulPolicy: IfNotPresent", "dev"),
    "a probe period that is not a number": ("base/service/api.yaml", "periodSeconds: 10", "periodSeconds: often", "dev"),
    "partitions that are not a number": ("base/kafka/topics.yaml", "partitions: 6", "partitions: six", "dev"),
    "an unknown field in the Kafka resource":
        ("base/kafka/kafka.yaml", "    listeners:", "    listenrs: []\n    listeners:", "dev"),
    "a PostgreSQL cluster with no instances": ("base/postgres/clusters.yaml", "instances: 3", "instances: 0", "production"),
    "a backup method the operator does not know":
        ("overlays/production/scheduled-backups.yaml", "method: barmanObjectStore", "method: tape", "production"),
    "an HPA without its target":
        ("base/service/autoscaling.yaml", "  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}\n", "",
         "production"),
    "a CRD's CEL rule broken (JMX metrics without their config)":
        ("base/kafka/kafka.yaml", "type: strimziMetricsReporter", "type: jmxPrometheusExporter", "dev"),
    "a KafkaUser ACL operation Strimzi does not know":
        ("base/kafka/users.yaml", "operations: [Read, Describe]", "operations: [Read, Peek]", "dev"),
    "a network policy selector that is a list":
        ("base/network/default-deny.yaml", "  podSelector: {}\n  policyTypes: [Ingress, Egress]",
         "  podSelector: []\n  policyTypes: [Ingress, Egress]", "production"),
}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=list(BREAKAGES))
def test_a_broken_manifest_fails_validation(tools: Tools, tmp_path, breakage):
    """The validation is not a rubber stamp: a copy of deploy/k8s with one mistake is refused."""
    relative, before, after, overlay = BREAKAGES[breakage]
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    target = copy / relative
    text = target.read_text()
    assert before in text, f"{relative} no longer contains {before!r}: update this test"
    target.write_text(text.replace(before, after, 1))
    errors = all_errors(render(tools.kustomize, copy / "overlays" / overlay))
    assert errors, f"{breakage} was not caught"
    print(f"{breakage}: {errors[0]}")


def test_a_manifest_that_does_not_parse_fails_the_render(tools: Tools, tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    (copy / "base" / "kafka" / "kafka.yaml").write_text("apiVersion: kafka.strimzi.io/v1\nkind: Kafka\n  metadata: [\n")
    with pytest.raises(RenderError):
        render(tools.kustomize, copy / "overlays" / "dev")


# --- The services ------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_runs_an_api_and_a_consumers_deployment_each_with_autoscaler_and_disruption_budget(overlays, overlay):
    objects = overlays[overlay]
    deployments = by_name(objects, "Deployment")
    autoscalers = of_kind(objects, "HorizontalPodAutoscaler")
    budgets = of_kind(objects, "PodDisruptionBudget")
    services = by_name(objects, "Service")
    for service in SERVICES:
        for role in ("api", "consumers"):
            deployment = deployments[f"flourish-{service}-{role}"]
            assert env_value(deployment, "FLOURISH_SERVICE") == service
            assert env_value(deployment, "FLOURISH_ROLE") == role
            assert selector_matches(deployment["spec"]["selector"], pod_labels(deployment))
            scaling = [h for h in autoscalers if h["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]]
            assert len(scaling) == 1 and scaling[0]["spec"]["scaleTargetRef"]["kind"] == "Deployment"
            assert scaling[0]["spec"]["minReplicas"] <= scaling[0]["spec"]["maxReplicas"]
            # A disruption budget covers exactly this deployment's pods.
            covering = [b for b in budgets if selector_matches(b["spec"]["selector"], pod_labels(deployment))]
            assert len(covering) == 1, f"{name_of(deployment)} is covered by {len(covering)} budgets"
            others = [d for d in deployments.values() if d is not deployment]
            assert not any(selector_matches(covering[0]["spec"]["selector"], pod_labels(d)) for d in others)
        api = services[f"flourish-{service}-api"]
        assert selector_matches({"matchLabels": api["spec"]["selector"]}, pod_labels(deployments[f"flourish-{service}-api"]))
        assert not selector_matches({"matchLabels": api["spec"]["selector"]},
                                    pod_labels(deployments[f"flourish-{service}-consumers"]))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_non_root_on_a_read_only_root_with_probes_requests_and_limits(overlays, overlay):
    for deployment in of_kind(overlays[overlay], "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name_of(deployment)
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod.get("automountServiceAccountToken") is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]
            assert "livenessProbe" in container and "readinessProbe" in container, name_of(deployment)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_probes_use_the_shells_health_and_readiness_endpoints(overlays, overlay):
    for deployment in service_deployments(overlays[overlay]):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


def known_setting_names() -> set[str]:
    """Every environment variable some settings object of the code reads (the kernel's Settings,
    and any other pydantic-settings class the services define), and FLOURISH_SERVICE, which the
    container's command line uses (services.$(FLOURISH_SERVICE).app:app)."""
    from pydantic_settings import BaseSettings

    service_specs()  # imports every service, and so every settings class it defines
    importlib.import_module("services.web.settings")  # the web's (FLOURISH_WEB_*)
    names = {"FLOURISH_SERVICE"}
    pending: list[type[BaseSettings]] = list(BaseSettings.__subclasses__())
    while pending:
        settings_class = pending.pop()
        pending.extend(settings_class.__subclasses__())
        if not settings_class.__module__.startswith(("shared.", "services.")):
            continue
        prefix = settings_class.model_config.get("env_prefix", "")
        for field_name, field in settings_class.model_fields.items():
            alias = field.validation_alias
            names.add(alias if isinstance(alias, str) else f"{prefix}{field_name}".upper())
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_the_manifests_give_is_one_the_code_reads(overlays, overlay):
    known = known_setting_names()
    config = next(c for c in of_kind(overlays[overlay], "ConfigMap") if c["metadata"]["name"].startswith("flourish-config"))
    given = set(config["data"])
    for deployment in service_deployments(overlays[overlay]):
        given |= {e["name"] for e in container_env(deployment) if e["name"].startswith("FLOURISH_")}
    unknown = {name for name in given if name.startswith(("FLOURISH_", "DATABASE_", "KAFKA_"))} - known
    assert not unknown, f"settings no code reads (misspelt?): {sorted(unknown)}"
    assert {"KAFKA_BOOTSTRAP_SERVERS", "FLOURISH_TOPIC_PREFIX", "FLOURISH_JWKS_URL", "FLOURISH_OTLP_ENDPOINT"} <= given
    assert config["data"]["FLOURISH_TOPIC_PREFIX"] == TOPIC_PREFIX


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_variable_references_in_env_and_arguments_resolve(overlays, overlay):
    """Kubernetes expands $(NAME) only from variables defined earlier in the same container; a
    reference to anything else is passed on literally (a broken DATABASE_URL)."""
    for deployment in service_deployments(overlays[overlay]):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        defined: set[str] = set()
        for entry in container.get("env", []):
            for reference in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value", "")):
                assert reference in defined, f"{name_of(deployment)}: {entry['name']} uses $({reference}) before it is defined"
            defined.add(entry["name"])
        for argument in container.get("args", []) + container.get("command", []):
            for reference in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", argument):
                assert reference in defined, f"{name_of(deployment)}: argument uses undefined $({reference})"
        url = env_value(deployment, "DATABASE_URL")
        assert url.startswith("postgresql+asyncpg://$(DB_USER):$(DB_PASSWORD)@")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_embedded(overlays, overlay):
    objects = overlays[overlay]
    assert not of_kind(objects, "Secret"), "a Secret object is in the manifests"
    secret_like = re.compile(r"PASSWORD|SECRET|KEK|PRIVATE|TOKEN$|ACCESS_KEY", re.I)
    for deployment in of_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                if secret_like.search(entry["name"]):
                    assert "secretKeyRef" in entry.get("valueFrom", {}), (
                        f"{name_of(deployment)}: {entry['name']} is not from a secret")
    for config in of_kind(objects, "ConfigMap"):
        for key in config.get("data", {}):
            assert not secret_like.search(key), f"{name_of(config)} holds {key}"
    # The services' passwords are their own roles' (flourish-<service>-db-service), for each
    # service's own database; the owner's (CloudNativePG's flourish-<service>-db-app) is not theirs.
    for deployment in service_deployments(objects):
        service = pod_labels(deployment)["app.kubernetes.io/name"]
        password = env_value(deployment, "DB_PASSWORD")
        assert password == {"secretKeyRef": {"name": f"flourish-{service}-db-service", "key": "password"}}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_services_connect_as_their_own_roles_and_only_a_migration_job_holds_the_owners_secret(overlays, overlay):
    """Issue 14 item 1: the owner's secret is mounted by the service's migration Job and by no
    service pod; each database declares the service's role (CloudNativePG managed roles), whose
    password is the secret the pods read, and reporting's rebuild role with the owner its member."""
    objects = overlays[overlay]
    owners_secrets = re.compile(r"-db-app$")
    for deployment in of_kind(objects, "Deployment"):
        text = yaml.safe_dump(deployment["spec"]["template"])
        assert not any(owners_secrets.search(name) for name in re.findall(r"name: (\S+)", text)), name_of(deployment)
    jobs = by_name(objects, "Job")
    clusters = by_name(objects, "Cluster")
    for service in SERVICES:
        job = jobs[f"flourish-{service}-migrate"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][-4:] == ["flourish.cli", "migrate", "--service", service]
        password = next(e for e in container["env"] if e["name"] == "DB_PASSWORD")
        assert password["valueFrom"] == {"secretKeyRef": {"name": f"flourish-{service}-db-app", "key": "password"}}
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert (labels["app.kubernetes.io/name"], labels["app.kubernetes.io/component"]) == (service, "migrate")
        roles = {role["name"]: role for role in clusters[f"flourish-{service}-db"]["spec"]["managed"]["roles"]}
        role = roles[f"flourish_{service}"]
        assert role["login"] and role["passwordSecret"] == {"name": f"flourish-{service}-db-service"}
        assert not any(role.get(attribute) for attribute in ("superuser", "createrole", "createdb", "bypassrls"))
    reporting = {r["name"]: r for r in clusters["flourish-reporting-db"]["spec"]["managed"]["roles"]}
    assert reporting["reporting"]["inRoles"] == ["flourish_reporting_rebuild"]
    # The migration Jobs' pods may reach their database (and only theirs).
    for policy in of_kind(objects, "NetworkPolicy"):
        if policy["metadata"]["name"].endswith("-to-its-database"):
            components = policy["spec"]["podSelector"]["matchExpressions"][1]["values"]
            assert "migrate" in components, name_of(policy)


def test_the_consent_service_must_have_its_key_encryption_key(overlays):
    """Consent wraps pupils' data keys, reporting agencies' signing secrets: both hold the keyring,
    the active KEK required (fail closed), the retired ones optional (only during a rotation)."""
    for objects in overlays.values():
        for service in ("consent", "reporting"):
            for role in ("api", "consumers"):
                deployment = by_name(objects, "Deployment")[f"flourish-{service}-{role}"]
                kek = env_value(deployment, "FLOURISH_DATA_KEK")
                assert kek == {"secretKeyRef": {"name": "flourish-consent-kek", "key": "kek"}}  # not optional
                retired = env_value(deployment, "FLOURISH_DATA_KEK_RETIRED")
                assert retired == {"secretKeyRef": {"name": "flourish-consent-kek", "key": "retired", "optional": True}}


def test_the_retention_scheduler_runs_in_the_consent_consumers_pods_only(overlays):
    for objects in overlays.values():
        deployments = by_name(objects, "Deployment")
        assert env_value(deployments["flourish-consent-api"], "FLOURISH_CONSENT_RUN_RETENTION_SCHEDULER") == "false"
        assert env_value(deployments["flourish-consent-consumers"], "FLOURISH_CONSENT_RUN_RETENTION_SCHEDULER") in (None, "true")


# --- Kafka ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_there_is_a_topic_for_every_context_and_every_consumer_groups_dead_letters(overlays, overlay):
    topics = by_name(overlays[overlay], "KafkaTopic")
    expected = set(platform_topics(TOPIC_PREFIX))  # each context's, each producer's audit facts
    for service, spec in service_specs().items():
        expected |= {dead_letter_topic(f"{service}.{consumer.name}", TOPIC_PREFIX) for consumer in spec.consumers}
    names = {t["spec"].get("topicName", name) for name, t in topics.items()}
    assert expected <= names, f"missing KafkaTopics: {sorted(expected - names)}"
    for topic in topics.values():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "flourish"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_audit_topics_keep_everything(overlays, overlay):
    """Each producer's audit-fact topic, and the shared one they replaced (its history is still
    read by the ledger's recovery and reconciliation)."""
    topics = by_name(overlays[overlay], "KafkaTopic")
    for name in [*audit_fact_topics(TOPIC_PREFIX), legacy_audit_topic(TOPIC_PREFIX)]:
        audit = topics[name]["spec"]["config"]
        assert audit["retention.ms"] == -1 and audit["retention.bytes"] == -1, name
        assert audit["cleanup.policy"] == "delete", name  # never compacted: every entry of the chain stays
    partitions = {topics[name]["spec"]["partitions"] for name in audit_fact_topics(TOPIC_PREFIX)}
    assert partitions == {topics[topic_for("consent", TOPIC_PREFIX)]["spec"]["partitions"]}


def test_production_kafka_is_three_kraft_nodes_and_every_write_reaches_two_replicas(overlays):
    objects = overlays["production"]
    kafka = by_name(objects, "Kafka")["flourish"]
    pools = of_kind(objects, "KafkaNodePool")
    assert sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"]) == 3
    assert sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"]) == 3
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3 and config["min.insync.replicas"] == 2
    assert config["auto.create.topics.enable"] is False
    for topic in of_kind(objects, "KafkaTopic"):
        assert topic["spec"]["replicas"] == 3 and topic["spec"]["config"]["min.insync.replicas"] == 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_consumer_replicas_never_outnumber_the_partitions_they_share(overlays, overlay):
    """Kafka gives a group's members at most one partition each: replicas beyond the partition
    count would idle, so the autoscaler's ceiling stays at or under it."""
    objects = overlays[overlay]
    partitions = min(t["spec"]["partitions"] for t in of_kind(objects, "KafkaTopic") if t["metadata"]["name"] in
                     set(platform_topics(TOPIC_PREFIX)))
    for autoscaler in of_kind(objects, "HorizontalPodAutoscaler"):
        if autoscaler["metadata"]["labels"].get("app.kubernetes.io/component") == "consumers":
            assert autoscaler["spec"]["maxReplicas"] <= partitions, name_of(autoscaler)


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_its_own_postgresql_cluster(overlays, overlay):
    clusters = by_name(overlays[overlay], "Cluster")
    assert set(clusters) == {f"flourish-{service}-db" for service in SERVICES}
    for service in SERVICES:
        cluster = clusters[f"flourish-{service}-db"]["spec"]
        assert cluster["bootstrap"]["initdb"]["database"] == service
        assert cluster["enableSuperuserAccess"] is False


def test_production_databases_are_replicated_synchronously_and_backed_up_nightly(overlays):
    objects = overlays["production"]
    clusters = by_name(objects, "Cluster")
    scheduled = {b["spec"]["cluster"]["name"] for b in of_kind(objects, "ScheduledBackup")}
    assert scheduled == set(clusters)
    for cluster in clusters.values():
        spec = cluster["spec"]
        assert spec["instances"] == 3 and spec["postgresql"]["synchronous"]["number"] >= 1
        store = spec["backup"]["barmanObjectStore"]
        assert store["wal"]["encryption"] and store["data"]["encryption"]
        assert store["s3Credentials"]["secretAccessKey"]["name"] == "flourish-backup-credentials"


def test_production_connection_budget_fits_each_database(overlays):
    """Each service pod may hold 21 connections (pool 10, overflow 10, the relay's leader)."""
    objects = overlays["production"]
    autoscalers = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objects, "HorizontalPodAutoscaler")}
    for service in SERVICES:
        pods = sum(autoscalers[f"flourish-{service}-{role}"]["spec"]["maxReplicas"] for role in ("api", "consumers"))
        limit = int(by_name(objects, "Cluster")[f"flourish-{service}-db"]["spec"]["postgresql"]["parameters"]["max_connections"])
        assert pods * 21 + 10 <= limit, f"{service}: {pods} pods x 21 connections > max_connections {limit}"


# --- Network policies -------------------------------------------------------------------------


def synthetic_pods(objects: list[Manifest]) -> dict[str, dict[str, str]]:
    """The pods a namespace will hold: the Deployments' own, and those the operators make with
    the labels they document (CloudNativePG's cnpg.io/cluster, Strimzi's strimzi.io/*)."""
    pods = {name_of(d): pod_labels(d) for d in of_kind(objects, "Deployment")}
    for cluster in of_kind(objects, "Cluster"):
        name = cluster["metadata"]["name"]
        pods[f"postgres/{name}"] = {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance",
                                    **cluster["spec"].get("inheritedMetadata", {}).get("labels", {})}
    pods["kafka/broker"] = {"strimzi.io/cluster": "flourish", "strimzi.io/kind": "Kafka", "strimzi.io/name": "flourish-kafka"}
    return pods


def egress_allowed(objects: list[Manifest], source: dict[str, str], destination: dict[str, str], port: int) -> bool:
    """Whether the namespace's policies let a pod with these labels open this port on another pod
    of the namespace (egress side; ipBlock-only rules do not name pods and are not counted)."""
    policies = [p for p in of_kind(objects, "NetworkPolicy") if "Egress" in p["spec"]["policyTypes"]
                and selector_matches(p["spec"]["podSelector"], source)]
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            peers = rule.get("to")
            ports = {p["port"] for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            if peers is None:
                continue  # any address: outside traffic, judged elsewhere
            for peer in peers:
                if ("podSelector" in peer and "namespaceSelector" not in peer
                        and selector_matches(peer["podSelector"], destination)):
                    return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_namespace_denies_everything_by_default(overlays, overlay):
    deny = by_name(overlays[overlay], "NetworkPolicy")["flourish-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_service_reaches_its_own_database_kafka_and_only_the_apis_the_design_calls(overlays, overlay):
    objects = overlays[overlay]
    pods = synthetic_pods(objects)
    for service in SERVICES:
        for role in ("api", "consumers"):
            source = pods[f"Deployment/flourish-{service}-{role}"]
            for other in SERVICES:
                reachable = egress_allowed(objects, source, pods[f"postgres/flourish-{other}-db"], 5432)
                assert reachable == (other == service), f"{service} {role} -> {other}'s database: {reachable}"
            assert egress_allowed(objects, source, pods["kafka/broker"], 9093)
            assert not egress_allowed(objects, source, pods["kafka/broker"], 9092)  # no plain listener
            # Services call consent's API (data keys, consent at share time); consent calls the
            # others' APIs (subject-access export); planning and reporting call assessment's
            # (framework versions; gender and year group for the report); nothing else.
            for other in SERVICES:
                if other != service:
                    allowed = egress_allowed(objects, source, pods[f"Deployment/flourish-{other}-api"], 8000)
                    expected = (other == "consent" or service == "consent"
                                or (other == "assessment" and service in ("planning", "reporting")))
                    assert allowed == expected, f"{service} {role} -> {other} api: {allowed}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_web_reaches_the_four_apis_and_no_database_or_kafka(overlays, overlay):
    """The web holds no data: it calls the APIs (as the signed-in user) and the identity provider."""
    objects = overlays[overlay]
    pods = synthetic_pods(objects)
    web = pods["Deployment/flourish-web"]
    for service in SERVICES:
        assert egress_allowed(objects, web, pods[f"Deployment/flourish-{service}-api"], 8000), service
        assert ingress_allowed(objects, web, pods[f"Deployment/flourish-{service}-api"], 8000), service
        assert not egress_allowed(objects, web, pods[f"Deployment/flourish-{service}-consumers"], 8000), service
        assert not egress_allowed(objects, web, pods[f"postgres/flourish-{service}-db"], 5432), service
    assert not egress_allowed(objects, web, pods["kafka/broker"], 9093)


def ingress_allowed(objects: list[Manifest], source: dict[str, str], destination: dict[str, str], port: int) -> bool:
    """Whether the destination's ingress policies admit a pod with the source's labels on this port."""
    for policy in of_kind(objects, "NetworkPolicy"):
        if "Ingress" not in policy["spec"]["policyTypes"] or not selector_matches(policy["spec"]["podSelector"], destination):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            if any("podSelector" in peer and "namespaceSelector" not in peer
                   and selector_matches(peer["podSelector"], source) for peer in rule.get("from", [])):
                return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_selector_in_a_policy_selects_some_pod(overlays, overlay):
    """A label typo in a policy selects nothing and silently blocks a flow."""
    objects = overlays[overlay]
    pods = list(synthetic_pods(objects).values())
    pods.append({"app.kubernetes.io/name": "otel-collector"})
    for policy in of_kind(objects, "NetworkPolicy"):
        selectors = [policy["spec"]["podSelector"]]
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            selectors += [peer["podSelector"] for peer in rule.get("from", []) + rule.get("to", [])
                          if "podSelector" in peer and "namespaceSelector" not in peer]
        for selector in selectors:
            assert any(selector_matches(selector, labels) for labels in pods), f"{name_of(policy)}: {selector} selects no pod"


# --- Image and compose -------------------------------------------------------------------------


def test_the_image_is_multi_stage_slim_and_runs_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.M | re.I)
    assert len(stages) >= 2, "a build stage and a runtime stage"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.1[1-9][\w.-]*-slim", dockerfile, re.M)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    runtime = dockerfile[dockerfile.rindex("FROM"):]
    assert "COPY --from=build" in runtime and "pip install" not in runtime  # nothing built in the final stage
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*", ".dockerignore starts by excluding everything"


def test_the_image_user_matches_the_pods_security_context(overlays):
    user = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.M)[-1]
    for deployment in service_deployments(overlays["production"]):
        assert str(deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == user


def test_the_compose_file_runs_the_four_services_read_only_and_non_root():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres"} <= set(services)
    known = known_setting_names()
    for name, port in SERVICES.items():
        service = services[name]
        assert service["environment"]["FLOURISH_SERVICE"] == name
        assert service["read_only"] is True and not service["user"].startswith("0")
        assert service["ports"] == [f"127.0.0.1:{port}:8000"]
        unknown = {k for k in service["environment"] if k.startswith(("FLOURISH_", "DATABASE_", "KAFKA_"))} - known
        assert not unknown, f"{name}: settings no code reads: {sorted(unknown)}"
