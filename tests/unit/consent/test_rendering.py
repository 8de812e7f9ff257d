"""The readable forms of a consent document (services/consent/rendering.py): the text and HTML a
family or DPO reads, exactly, and an HTML template that treats every value as text."""

from __future__ import annotations

from html.parser import HTMLParser

from services.consent.rendering import as_html, as_text

DOCUMENT = {
    "receipt_version": "flourish-consent-receipt/1",
    "given_by": {"name": "Jane <Example> & co", "relationship": "mother"},
    "covers": ["profile", "report"],
    "reason": None,
    "withdrawn": False,
    "nothing": [],
    "expired": [{"due_on": "2026-01-01", "kinds": [1, 2]}],
}

HEAD = ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Consent receipt</title>'
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}th{text-align:left;"
        "vertical-align:top;padding-right:1em}td,th{border-bottom:1px solid #ddd}</style></head>"
        "<body><h1>Consent receipt</h1>")


def test_the_html_form_is_nested_tables_and_numbered_lists_with_every_value_escaped() -> None:
    assert as_html("Consent receipt", DOCUMENT) == (
        HEAD
        + "<table><tr><th>Receipt version</th><td>flourish-consent-receipt/1</td></tr>"
        "<tr><th>Given by</th><td><table><tr><th>Name</th><td>Jane &lt;Example&gt; &amp; co</td></tr>"
        "<tr><th>Relationship</th><td>mother</td></tr></table></td></tr>"
        "<tr><th>Covers</th><td><ol><li>profile</li><li>report</li></ol></td></tr>"
        "<tr><th>Reason</th><td>—</td></tr><tr><th>Withdrawn</th><td>no</td></tr>"
        "<tr><th>Nothing</th><td>—</td></tr>"
        "<tr><th>Expired</th><td><ol><li><table><tr><th>Due on</th><td>2026-01-01</td></tr>"
        "<tr><th>Kinds</th><td><ol><li>1</li><li>2</li></ol></td></tr></table></li></ol></td></tr></table>"
        "</body></html>"
    )


def test_the_text_form_is_one_labelled_line_per_field() -> None:
    assert as_text("Consent receipt", DOCUMENT) == (
        "Consent receipt\n===============\n\n"
        "Receipt version: flourish-consent-receipt/1\n"
        "Given by:\n  Name: Jane <Example> & co\n  Relationship: mother\n"
        "Covers:\n  1.\n    profile\n  2.\n    report\n"
        "Reason: —\nWithdrawn: no\nNothing: —\n"
        "Expired:\n  1.\n    Due on: 2026-01-01\n    Kinds:\n      1.\n        1\n      2.\n        2\n"
    )


def test_markup_in_a_key_or_a_value_is_shown_as_text_never_built_as_a_tag() -> None:
    hostile = "<script>alert('x')</script>\"quoted\""
    page = as_html("<i>title</i>", {"a<b>": hostile, "list": [hostile]})

    tags: set[str] = set()
    text: list[str] = []

    class Reader(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.add(tag)

        def handle_data(self, data: str) -> None:
            text.append(data)

    Reader(convert_charrefs=True).feed(page)
    assert tags == {"html", "head", "meta", "title", "style", "body", "h1", "table", "tr", "th", "td", "ol", "li"}
    assert text.count(hostile) == 2 and "<i>title</i>" in text and "A<b>" in text
