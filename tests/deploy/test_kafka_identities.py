"""Kafka on Strimzi with identities (issue 17 item 1, the cluster half): nobody reaches a broker
anonymously, each service is its own KafkaUser whose ACLs allow what that service does and nothing
more — derived here from the services' own specs, not copied — no service can create, delete or
reconfigure a topic, and only the four services' pods may open a connection at all.

`kafka_user_acls` reads the rendered KafkaUsers into the same shape as flourish/kafka_acls.py's
table ({identity: {(resource type, name, pattern, operation)}}), so the two can be compared."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from typing import Any

import pytest

from flourish.local.services import SERVICES
from shared.events.envelope import topic_for
from shared.messaging.topics import consumer_group, dead_letter_topic
from tests.deploy.manifests import OVERLAYS, Manifest
from tests.deploy.test_manifests import by_name, container_env, of_kind, pod_labels, selector_matches, service_deployments

PREFIX = "flourish."
ADMIN = "flourish-admin"

Acl = tuple[str, str, str, str]  # (resource type, name, pattern type, operation), Strimzi's spelling


def kafka_user_acls(objects: Iterable[Manifest]) -> dict[str, set[Acl]]:
    """Every KafkaUser's allowed ACLs: {user: {(type, name, pattern, operation)}}, one entry per
    operation; the pattern type as Strimzi writes it (`literal`, `prefix`; `literal` if unset)."""
    table: dict[str, set[Acl]] = {}
    for user in of_kind(objects, "KafkaUser"):
        entries: set[Acl] = set()
        for acl in ((user["spec"].get("authorization") or {}).get("acls") or []):
            if acl.get("type", "allow") != "allow":
                continue
            resource = acl["resource"]
            for operation in acl["operations"]:
                entries.add((resource["type"], resource.get("name", "kafka-cluster"),
                             resource.get("patternType", "literal"), operation))
        table[user["metadata"]["name"]] = entries
    return table


def in_kafka_terms(table: dict[str, set[Acl]]) -> dict[str, set[tuple[str, str, str, str]]]:
    """The same table in Kafka's own names, as flourish/kafka_acls.py's Binding enums spell them
    (`Binding.resource_type.name`, ...): identity without the `flourish-` prefix, TOPIC/GROUP,
    LITERAL/PREFIXED, READ/WRITE/DESCRIBE/ALTER_CONFIGS. For comparing the two tables."""
    def operation(name: str) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()
    return {user.removeprefix("flourish-"): {(kind.upper(), name, {"literal": "LITERAL", "prefix": "PREFIXED"}[pattern],
                                              operation(op)) for kind, name, pattern, op in acls}
            for user, acls in table.items()}


def service_specs() -> dict[str, Any]:
    return {name: importlib.import_module(f"services.{name}.app").SPEC for name in SERVICES}


# Reads a service makes outside its consumer groups (readers with no group), each with its reason.
EXTRA_READS: dict[str, dict[str, str]] = {
    "consent": {"consent": "the start-up check of the erasure register (services/consent/restore.py) reads its own topic"},
    "reporting": {
        **{f"audit.{service}": "the audit ledger records each producer's audit facts from that producer's topic"
           for service in SERVICES},
        "audit.checkpoints": "the checkpointer reads back the witnessed checkpoints (audit_topic.KafkaTopicWitness)",
    },
}
# Topics a service writes besides its own context's, its audit facts' and its dead letters.
EXTRA_WRITES: dict[str, dict[str, str]] = {
    "reporting": {"audit.checkpoints": "every signed audit checkpoint (the witness outside the database)"},
}


def expected_acls(service: str, spec: Any) -> set[Acl]:
    """What the service does, from its spec: write its own context, its own audit facts and its
    consumers' dead letters; read what its consumers subscribe to and their dead letters (read
    back by a rebuild, which skips what was dead-lettered, and by a replay); read its consumer
    groups. The same rules as flourish/kafka_acls.py's table."""
    dead_letters = {dead_letter_topic(f"{service}.{consumer.name}", PREFIX) for consumer in spec.consumers}
    writes = {topic_for(service, PREFIX), topic_for(f"audit.{service}", PREFIX), *dead_letters}
    writes |= {topic_for(context, PREFIX) for context in EXTRA_WRITES.get(service, {})}
    reads = {topic_for(context, PREFIX) for consumer in spec.consumers for context in consumer.contexts}
    reads |= {topic_for(context, PREFIX) for context in EXTRA_READS.get(service, {})}
    reads |= dead_letters
    groups = {consumer_group(f"{service}.{consumer.name}", PREFIX) for consumer in spec.consumers}
    acls: set[Acl] = set()
    acls |= {("topic", topic, "literal", op) for topic in writes for op in ("Write", "Describe")}
    acls |= {("topic", topic, "literal", op) for topic in reads for op in ("Read", "Describe")}
    acls |= {("group", group, "literal", "Read") for group in groups}
    return acls


def test_the_table_reads_in_kafkas_own_names():
    table = {"flourish-reporting": {("topic", "flourish.audit.checkpoints", "literal", "Write"),
                                    ("group", "reporting.sharing", "prefix", "AlterConfigs")}}
    assert in_kafka_terms(table) == {"reporting": {("TOPIC", "flourish.audit.checkpoints", "LITERAL", "WRITE"),
                                                   ("GROUP", "reporting.sharing", "PREFIXED", "ALTER_CONFIGS")}}


def owner_of(topic: str) -> str | None:
    """The service that alone may write a topic, by its name."""
    name = topic.removeprefix(PREFIX)
    for service in SERVICES:
        if name in (service, f"audit.{service}") or name.startswith(f"dlq.{service}."):
            return service
    return None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_is_a_kafka_user_allowed_exactly_what_its_spec_does(overlays, overlay):
    table = kafka_user_acls(overlays[overlay])
    assert set(table) == {f"flourish-{service}" for service in SERVICES} | {ADMIN}
    for service, spec in service_specs().items():
        granted, expected = table[f"flourish-{service}"], expected_acls(service, spec)
        assert granted == expected, (f"flourish-{service}: missing {sorted(expected - granted)}, "
                                     f"beyond what it does {sorted(granted - expected)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cluster_grants_each_service_what_the_local_broker_grants_it(overlays, overlay):
    """The KafkaUsers and flourish/kafka_acls.py (what `flourish infra up` and every test run apply
    to the local broker) are one table: a grant added to one and not the other fails here."""
    from flourish.kafka_acls import kafka_acls

    local = {identity: {(b.resource_type.name, b.name, b.pattern_type.name, b.operation.name) for b in bindings}
             for identity, bindings in kafka_acls(PREFIX).items()}
    cluster = {user: acls for user, acls in in_kafka_terms(kafka_user_acls(overlays[overlay])).items()
               if user != ADMIN.removeprefix("flourish-")}
    assert cluster == local


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_service_may_create_delete_or_reconfigure_a_topic_or_write_another_services(overlays, overlay):
    table = kafka_user_acls(overlays[overlay])
    users = by_name(overlays[overlay], "KafkaUser")
    for service in SERVICES:
        user = f"flourish-{service}"
        assert users[user]["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert users[user]["spec"]["authorization"]["type"] == "simple"
        for kind, name, pattern, operation in table[user]:
            assert operation in ("Read", "Write", "Describe"), (user, name, operation)
            assert kind in ("topic", "group"), (user, kind)  # never the cluster, never a transactional id
            assert pattern == "literal", (user, name, pattern)
            if operation == "Write":
                assert owner_of(name) == service or (
                    service == "reporting" and name == topic_for("audit.checkpoints", PREFIX)), (
                    f"{user} may write {name}, owned by {owner_of(name)}")
        # The audit topics' retention is their KafkaTopics': a service may not even try to change it.
        assert not any(op in ("Alter", "AlterConfigs", "Create", "Delete", "All") for *_, op in table[user])
    # The admin identity is a super user through the cluster (below), not through ACLs.
    assert "authorization" not in users[ADMIN]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_brokers_refuse_anonymous_clients_and_only_the_admin_is_a_super_user(overlays, overlay):
    kafka = by_name(overlays[overlay], "Kafka")["flourish"]["spec"]
    listeners = kafka["kafka"]["listeners"]
    assert listeners, "no listener"
    for listener in listeners:
        assert listener.get("authentication", {}).get("type") in ("scram-sha-512", "tls"), listener["name"]
        assert listener["tls"] is True, f"{listener['name']}: credentials and events in clear"
    assert kafka["kafka"]["authorization"] == {"type": "simple", "superUsers": [ADMIN]}
    assert "userOperator" in kafka["entityOperator"]
    # Every KafkaUser belongs to this cluster (the User Operator watches only its own).
    for user in of_kind(overlays[overlay], "KafkaUser"):
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "flourish"


def pods_of(objects: list[Manifest]) -> dict[str, dict[str, str]]:
    """The labels of every kind of pod the namespace runs: Deployments' and Jobs' templates, and
    the operators' pods as they label them (CloudNativePG's instances, Strimzi's brokers)."""
    pods = {f"{o['kind']}/{o['metadata']['name']}": pod_labels(o) for o in objects if o["kind"] in ("Deployment", "Job")}
    for cluster in of_kind(objects, "Cluster"):
        pods[f"postgres/{cluster['metadata']['name']}"] = {"cnpg.io/cluster": cluster["metadata"]["name"],
                                                           "app.kubernetes.io/part-of": "flourish"}
    pods["kafka/broker"] = {"strimzi.io/cluster": "flourish", "strimzi.io/kind": "Kafka",
                            "app.kubernetes.io/part-of": "flourish"}
    return pods


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_four_services_pods_may_connect_to_the_brokers(overlays, overlay):
    objects = overlays[overlay]
    kafka = by_name(objects, "Kafka")["flourish"]["spec"]
    services = {f"Deployment/flourish-{s}-{role}" for s in SERVICES for role in ("api", "consumers")}
    for listener in kafka["kafka"]["listeners"]:
        peers = listener.get("networkPolicyPeers")
        assert peers, f"{listener['name']}: no networkPolicyPeers, so any pod may connect"
        for peer in peers:
            assert set(peer) == {"podSelector"}, f"{listener['name']}: a peer beyond the namespace's pods: {peer}"
        admitted = {name for name, labels in pods_of(objects).items()
                    if any(selector_matches(peer["podSelector"], labels) for peer in peers)}
        assert admitted == services, f"{listener['name']} admits {sorted(admitted ^ services)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_connects_as_its_own_kafka_user_over_tls(overlays, overlay):
    objects = overlays[overlay]
    config = next(c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("flourish-config"))["data"]
    assert config["FLOURISH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["FLOURISH_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert config["KAFKA_BOOTSTRAP_SERVERS"].endswith(":9093")
    ca_dir = config["FLOURISH_KAFKA_CA_FILE"].rsplit("/", 1)[0]
    users = by_name(objects, "KafkaUser")
    for deployment in service_deployments(objects):
        service = pod_labels(deployment)["app.kubernetes.io/name"]
        env = {e["name"]: e for e in container_env(deployment)}
        assert env["FLOURISH_KAFKA_USERNAME"]["value"] == f"flourish-{service}" in users
        # The User Operator writes the password into a Secret named as the KafkaUser, key `password`.
        assert env["FLOURISH_KAFKA_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": f"flourish-{service}", "key": "password"}}
        pod = deployment["spec"]["template"]["spec"]
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        ca = next(name for name, m in mounts.items() if m["mountPath"] == ca_dir)
        assert volumes[ca]["secret"]["secretName"] == "flourish-cluster-ca-cert"  # Strimzi's cluster CA
    # No other pod holds a service's Kafka password, nor the admin's.
    for obj in objects:
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        service = pod_labels(obj).get("app.kubernetes.io/name")
        refs = {e.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
                for c in obj["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
        assert ADMIN not in refs, obj["metadata"]["name"]
        for other in SERVICES:
            if f"flourish-{other}" in refs:
                assert other == service and pod_labels(obj)["app.kubernetes.io/component"] in ("api", "consumers"), (
                    f"{obj['metadata']['name']} reads flourish-{other}'s Kafka password")
