"""A trust's SMTP server that requires a login (FLOURISH_NOTICES_SMTP_USERNAME/_PASSWORD): the
sender logs in and the notice goes; with a wrong password it stays queued and is retried."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.reporting.sharing import NoticeSettings
from tests.integration.kernel.helpers import eventually
from tests.integration.notices.conftest import SENDER, Notices, Smtp
from tests.integration.notices.test_family_notices import agency, delivered, grant_with_email, mailbox_address
from tests.integration.reporting.sharing.conftest import Receiver

LOGIN = ("flourish-notices", "correct horse battery staple")
# The test's server takes the login in clear on 127.0.0.1 (a trust's server would want STARTTLS).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def sender(smtp: Smtp, request: pytest.FixtureRequest) -> NoticeSettings:
    smtp.login = LOGIN
    return SENDER.model_copy(update={"smtp_port": smtp.port, "smtp_username": LOGIN[0],
                                     "smtp_password": SecretStr(request.param)})


@pytest.mark.parametrize("sender", [LOGIN[1]], indirect=True)
async def test_the_sender_logs_in_to_an_smtp_server_that_requires_it(notices: Notices, receiver: Receiver) -> None:
    n = notices
    assert n.smtp is not None
    n.smtp.start()
    email = mailbox_address()
    (pupil,) = await n.consent.enrol()
    await grant_with_email(n, pupil, email)
    share = (await n.share((await agency(n, receiver.url))["agency_id"], pupil)).json()
    await eventually(lambda: n.notice_in(share["share_id"], "sent"))
    assert len(n.smtp.mailbox.to(email)) == 1


@pytest.mark.parametrize("sender", ["a wrong password"], indirect=True)
async def test_a_refused_login_leaves_the_notice_queued_and_retried(notices: Notices, receiver: Receiver) -> None:
    n = notices
    assert n.smtp is not None
    n.smtp.start()
    (pupil,) = await n.consent.enrol()
    await grant_with_email(n, pupil, mailbox_address())
    share = (await n.share((await agency(n, receiver.url))["agency_id"], pupil)).json()
    await eventually(lambda: delivered(n, share["delivery_id"]))

    async def retried() -> object:
        row = await n.notice(share["share_id"])
        return row if row.status == "queued" and row.attempts >= 2 else None

    row = await eventually(retried)
    assert row.last_error == "smtp_login_refused"
    assert n.smtp.mailbox.messages == []
