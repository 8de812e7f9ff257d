"""A small demo trust for a fresh platform: two academies with a Year 4 class each.

The pupils come in as an MIS export would bring them (fictional names, dates of birth and UPNs,
through the same import as a real roster), so the demo exercises the real path: personal data in
its own table, PupilEnrolled events with pseudonymous ids. Loading twice changes nothing: the
second import finds every UPN already on the roster.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncEngine

from services.assessment import handlers, roster_handlers
from services.assessment.framework_store import sample_framework
from services.assessment.personal_data import PersonalDataRepository
from services.assessment.privacy import AssessmentPrivacySettings, Privacy
from services.assessment.tables import kernel
from shared.auth import Principal, Role
from shared.datakeys import DataKeySettings
from shared.events.sealing import EventSealing
from shared.settings import Settings
from shared.store.event_store import EventStore

_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-4d55-9b7e-0c0f1a2b3c4d")
HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group"
FORENAMES = ["Ava", "Ben", "Cara", "Dev", "Ella", "Finn", "Gita", "Hal", "Isla", "Jay", "Kit", "Lena"]


def demo_id(name: str) -> uuid.UUID:
    """Stable ids, so the demo is the same trust on every machine and every load."""
    return uuid.uuid5(_NAMESPACE, name)


@dataclass(frozen=True)
class DemoTrust:
    trust_id: uuid.UUID
    academies: dict[str, uuid.UUID]
    class_sizes: dict[str, int]


DEMO = DemoTrust(
    trust_id=demo_id("trust:oak-hill"),
    academies={"Oak Hill Primary": demo_id("academy:oak-hill-primary"), "Riverside Junior": demo_id("academy:riverside")},
    class_sizes={"Oak Hill Primary": 12, "Riverside Junior": 8},
)


def demo_roster(academy_number: int, size: int) -> bytes:
    """A fictional Year 4 class as an MIS would export it (UPNs starting with Z: not real ones)."""
    rows = [
        f"Z{academy_number:02d}{n:09d}A,Demo{academy_number}{n:02d},{FORENAMES[n % len(FORENAMES)]},"
        f"{date(2017, 1 + n % 12, 1 + n):%d/%m/%Y},{'FM'[n % 2]},4,4{'AB'[academy_number % 2]}"
        for n in range(size)
    ]
    return ("\r\n".join([HEADER, *rows]) + "\r\n").encode()


async def load_demo(engine: AsyncEngine, settings: Settings | None = None) -> int:
    """Register the demo academies, load the sample framework and import the classes; returns
    how many pupils were new (0 when the demo was loaded before). The consent service must be
    running: the pupils' details are sealed with their data keys."""
    # An entry point (the CLI's): its settings are read here, once.
    privacy = Privacy(settings or Settings(), AssessmentPrivacySettings(), DataKeySettings())
    try:
        return await _load(engine, privacy)
    finally:
        await privacy.aclose()


async def _load(engine: AsyncEngine, privacy: Privacy) -> int:
    context = handlers.Context(store=EventStore(kernel, sealing=EventSealing(privacy.keyring)),
                               personal_data=PersonalDataRepository(privacy.keyring, privacy.index))
    admin = Principal("demo-loader", frozenset({Role.trust_admin}), DEMO.trust_id)
    enrolled = 0
    async with engine.begin() as conn:
        await handlers.load_sample_framework(conn, context, sample_framework())
        await roster_handlers.register_trust(conn, admin, "Oak Hill Learning Trust (demo)")
        for number, (name, academy_id) in enumerate(DEMO.academies.items(), start=1):
            await roster_handlers.register_academy(conn, admin, academy_id, name)
            report = await roster_handlers.import_roster(conn, context, admin, academy_id,
                                                  demo_roster(number, DEMO.class_sizes[name]), whole_roll=False)
            enrolled += len(report.enrolled)
    return enrolled
