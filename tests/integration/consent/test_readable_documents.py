"""The readable forms of what the consent service hands to families and DPOs, on the real Kafka and
PostgreSQL: a hostile value recorded through the API comes back in the HTML subject-access export
and receipt as text, escaped, and never as markup."""

from __future__ import annotations

from html.parser import HTMLParser

from tests.integration.consent.conftest import Consent

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_EVIDENCE = "<img src=x onerror=alert(2)> & <b>bold</b>"


class _Page(HTMLParser):
    """The tags a browser would build from the page, and the text it would show."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(document: str) -> _Page:
    page = _Page()
    page.feed(document)
    page.close()
    return page


async def test_a_hostile_parent_name_comes_back_escaped_in_the_html_export_and_receipt(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    recorded = await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body(
        "share_camhs", name=HOSTILE_NAME, evidence_reference=HOSTILE_EVIDENCE))
    assert recorded.status_code == 201, recorded.text

    export = await consent.client.get(f"/pupils/{pupil}/subject-access?format=html", headers=consent.dpo)
    receipt = await consent.client.get(f"/consent-decisions/{recorded.json()['decision_id']}/receipt",
                                       headers={**consent.senco, "Accept": "text/html"})
    as_json = (await consent.client.get(f"/pupils/{pupil}/subject-access", headers=consent.dpo)).json()

    for response in (export, receipt):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert response.headers["cache-control"] == "no-store"
        assert response.text.startswith("<!doctype html>")
        assert "<script>" not in response.text and "<img" not in response.text and "<b>" not in response.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
        page = parsed(response.text)
        assert page.tags.isdisjoint({"script", "img", "b"})
        assert HOSTILE_NAME in page.text and HOSTILE_EVIDENCE in page.text
    # The JSON form is the value as recorded: escaping belongs to the HTML alone.
    assert as_json["services"]["consent"]["consent_decisions"][0]["given_by"]["name"] == HOSTILE_NAME
