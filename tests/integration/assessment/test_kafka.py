"""The "done when" walk on the real stack: load the sample, import a class from CSV, screen it,
complete an individual assessment, and StrandScored arrives on Kafka as a CloudEvent with the
tenancy and the trace of the request that completed it."""

from __future__ import annotations

import uuid

from shared.events.assessment import StrandScored
from shared.events.envelope import decode_wire, topic_for
from shared.messaging.clients import ADMIN, kafka_options
from tests.integration.assessment.helpers import SAMPLE, class_of, now
from tests.integration.kernel.helpers import eventually, read_topic
from tests.unit.assessment.report import levels_at

TRACE_ID = uuid.uuid4().hex


async def test_strand_scored_arrives_on_kafka_as_a_cloudevent_with_tenancy_and_trace_context(api, tenant, service_settings):
    frameworks = (await api.get("/frameworks", headers=tenant.headers())).json()["items"]
    assert SAMPLE in [f["version"] for f in frameworks]
    class_id, pupils = await class_of(api, tenant, 3)
    screening = (await api.post("/assessments", headers=tenant.headers(),
                                json={"class_id": str(class_id), "strands": ["being"], "framework_version": SAMPLE})).json()
    assert len(screening["assessments"]) == 3

    individual = (await api.post("/assessments", headers=tenant.headers(),
                                 json={"pupil_id": str(pupils[0]), "strands": ["being"], "framework_version": SAMPLE})).json()
    assessment_id = individual["assessments"][0]["assessment_id"]
    ratings = [{"pupil_id": str(pupils[0]), "statement_id": s, "level": level.value, "assessment_id": assessment_id}
               for s, level in levels_at(1).items()]
    bulk = await api.post("/observations/bulk", json={"observed_at": now(), "ratings": ratings}, headers=tenant.headers())
    assert bulk.status_code == 201
    traceparent = f"00-{TRACE_ID}-{uuid.uuid4().hex[:16]}-01"
    completed = await api.post(f"/assessments/{assessment_id}/complete", headers={**tenant.headers(), "traceparent": traceparent})
    assert completed.status_code == 200

    topic = topic_for("assessment", service_settings.topic_prefix)

    async def strand_scored():
        records = await read_topic(kafka_options(service_settings, ADMIN), topic, expected=1, timeout=5)
        found = [(r, decode_wire(r.headers, r.value)) for r in records
                 if dict(r.headers).get("ce_type") == StrandScored.event_type.encode()]
        return [(r, w) for r, w in found if w.data["assessment_id"] == assessment_id]

    ((record, wire),) = await eventually(strand_scored, timeout=60)
    # On Kafka the scores are sealed with the pupil's key; the service's keyring opens them.
    assert b'"need_percents":' not in record.value and b"being.safe" not in record.value
    sealing = api._transport.app.state.runtime.sealing  # noqa: SLF001 - the in-process app's keyring
    envelope = wire.envelope(await sealing.open(wire.model, wire.data, wire.id, wire.trust_id))
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0" and headers["ce_source"] == b"/flourish/assessment"
    assert headers["ce_trustid"] == str(tenant.trust_id).encode() and headers["ce_academyid"] == str(tenant.academy_id).encode()
    assert record.key == str(pupils[0]).encode() and headers["ce_subject"] == str(pupils[0]).encode()
    assert headers["traceparent"].decode().split("-")[1] == TRACE_ID
    assert round(envelope.data.strand_percent) == 36 and envelope.data.working_at_strand == "being"
    assert envelope.data.need_percents == {"being.safe": 51.1, "being.special": 28.9, "being.needs-met": 28.9}
