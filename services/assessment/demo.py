"""A small demo trust for a fresh platform: two academies and a class of pseudonymous pupils.

Only pseudonymous ids travel in events; the roster's names arrive with the roster issue. Loading
twice changes nothing: each pupil's stream must not exist yet, or the pupil is skipped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncEngine

from services.assessment.tables import kernel
from shared.events.assessment import PupilEnrolled
from shared.events.envelope import Envelope
from shared.store.event_store import NO_STREAM, EventStore, PendingAppend

_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-4d55-9b7e-0c0f1a2b3c4d")


def demo_id(name: str) -> uuid.UUID:
    """Stable ids, so the demo is the same trust on every machine and every load."""
    return uuid.uuid5(_NAMESPACE, name)


@dataclass(frozen=True)
class DemoTrust:
    trust_id: uuid.UUID
    academies: dict[str, uuid.UUID]
    pupils: dict[str, list[uuid.UUID]]


DEMO = DemoTrust(
    trust_id=demo_id("trust:oak-hill"),
    academies={"Oak Hill Primary": demo_id("academy:oak-hill-primary"), "Riverside Junior": demo_id("academy:riverside")},
    pupils={
        "Oak Hill Primary": [demo_id(f"pupil:oak-hill:{n}") for n in range(12)],
        "Riverside Junior": [demo_id(f"pupil:riverside:{n}") for n in range(8)],
    },
)


async def load_demo(engine: AsyncEngine) -> int:
    """Enrol the demo pupils; returns how many were new."""
    store = EventStore(kernel)
    async with engine.begin() as conn:
        appends = []
        for academy_name, pupils in DEMO.pupils.items():
            academy_id = DEMO.academies[academy_name]
            class_id = demo_id(f"class:{academy_name}:year-4")
            for pupil_id in pupils:
                stream = f"pupil-{pupil_id}"
                if await store.stream_version(conn, stream):
                    continue
                enrolled = PupilEnrolled(pupil_id=pupil_id, class_id=class_id, enrolled_on=date(2026, 9, 3))
                envelope = Envelope(data=enrolled, trust_id=DEMO.trust_id, academy_id=academy_id, source="/flourish/demo")
                appends.append(PendingAppend(stream, [envelope], NO_STREAM))
        await store.append_batch(conn, appends)
    return len(appends)
