"""The retention scheduler alone in a process of its own, for the test that kills it mid-pass.

    python -m tests.integration.consent.scheduler_process DATABASE_URL TRUST_ID STATE_DIR

Each expiry pauses a little after its claim (inside the transaction), so a SIGKILL lands in the
middle of a pass, often between the claim and the commit.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from uuid import UUID

from services.consent.handlers import ConsentDeps
from services.consent.scheduler import RetentionScheduler
from services.consent.tables import data_keys, kernel
from shared.datakeys import DataKeySettings, DataKeyVault, LocalKek
from shared.settings import Settings
from shared.store.db import create_engine
from shared.store.event_store import EventStore


async def main(database_url: str, trust_id: UUID, state_dir: Path) -> None:
    settings = Settings(database_url=database_url, state_dir=state_dir)
    engine = create_engine(settings, pool_size=2)
    vault = DataKeyVault(LocalKek.from_settings(DataKeySettings(), state_dir), data_keys)
    scheduler = RetentionScheduler(engine, ConsentDeps(EventStore(kernel), vault),
                                   fault=lambda stage: time.sleep(0.02) if stage == "claimed" else None)
    print("started", flush=True)
    while True:
        await scheduler.run_once(trust_id)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], UUID(sys.argv[2]), Path(sys.argv[3])))
