"""Each service's settings tree reads the same environment variables as before it was one tree
(deploy/k8s, compose.yaml and the docs name them)."""

from __future__ import annotations

import base64

import pytest

from services.assessment.app import AssessmentServiceSettings
from services.consent.app import ConsentServiceSettings
from services.planning.app import PlanningServiceSettings
from services.reporting.app import ReportingServiceSettings
from shared.settings import Settings

KEY = base64.b64encode(bytes(32)).decode()


def test_every_section_of_every_tree_reads_its_own_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DATABASE_URL": "postgresql+asyncpg://u:p@db:5432/flourish", "FLOURISH_TOPIC_PREFIX": "t.",
        "FLOURISH_CONSENT_RETENTION_INTERVAL_S": "7", "FLOURISH_CONSENT_RUN_RETENTION_SCHEDULER": "false",
        "FLOURISH_DATA_KEK": KEY, "FLOURISH_DATA_KEY_CACHE_TTL_S": "5", "FLOURISH_LOOKUP_KEY": KEY,
        "FLOURISH_AUDIT_CSV_MAX_ROWS": "9", "FLOURISH_SHARING_MAX_ATTEMPTS": "3",
    }.items():
        monkeypatch.setenv(name, value)

    consent, assessment = ConsentServiceSettings(), AssessmentServiceSettings()
    reporting, planning = ReportingServiceSettings(), PlanningServiceSettings()

    for tree in (consent, assessment, reporting, planning):
        assert tree.kernel.database_url.endswith("@db:5432/flourish") and tree.kernel.topic_prefix == "t."
    assert consent.consent.retention_interval_s == 7 and consent.consent.run_retention_scheduler is False
    assert consent.data_keys.data_kek is not None and consent.data_keys.data_kek.get_secret_value() == KEY
    assert assessment.data_keys.data_key_cache_ttl_s == 5
    assert assessment.privacy.lookup_key is not None and assessment.privacy.lookup_key.get_secret_value() == KEY
    assert reporting.audit.csv_max_rows == 9 and reporting.sharing.max_attempts == 3


def test_a_tree_from_the_kernel_settings_alone_reads_its_sections_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOURISH_SHARING_MAX_ATTEMPTS", "4")
    kernel = Settings(topic_prefix="mine.")

    tree = ReportingServiceSettings.of(kernel)

    assert tree.kernel is kernel and tree.sharing.max_attempts == 4
    assert ReportingServiceSettings.of(tree) is tree
    with pytest.raises(TypeError):
        ReportingServiceSettings.of(ConsentServiceSettings(kernel=kernel))
