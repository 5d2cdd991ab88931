"""Malformed and hostile requests: each gets a 4xx with a clear message, and nothing is
stored and nothing is sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from digestd.models import Subscriber, SubscriberStatus
from tests.conftest import WebRig
from tests.web_helpers import SIGNUP, csrf_of, links_in, signup_form, text_of

GOOD = {"email": "ann@example.com", **SIGNUP}
TEN_KB = "x" * 10_240


def _form(**changes: Any) -> tuple[str, dict[str, Any]]:
    return "form", {**GOOD, **changes}


def _json(**changes: Any) -> tuple[str, dict[str, Any]]:
    return "json", {**GOOD, **changes}


# (how to send, what, expected status, words the answer must contain)
CASES: list[Any] = [
    pytest.param(*_form(email=""), 400, "enter your email address", id="empty-email"),
    pytest.param(*_form(email="plainaddress"), 400, "not a valid address", id="no-at"),
    pytest.param(*_form(email="@example.com"), 400, "not a valid address", id="no-local-part"),
    pytest.param(*_form(email="ann@"), 400, "not a valid address", id="no-domain"),
    pytest.param(*_form(email="ann@@example.com"), 400, "not a valid address", id="double-at"),
    pytest.param(*_form(email="ann smith@example.com"), 400, "not a valid address", id="space"),
    pytest.param(*_form(email="josé@example.com"), 400, "not a valid address", id="utf8-local"),
    pytest.param(*_form(email="ann@example"), 400, "not a valid address", id="no-tld"),
    pytest.param(*_form(email="ann@-example.com"), 400, "not a valid address", id="bad-label"),
    pytest.param(
        *_form(email="<script>alert(1)</script>@example.com"),
        400,
        "not a valid address",
        id="script-email",
    ),
    pytest.param(
        *_form(email="ann@example.com\r\nBcc: victim@example.org"),
        400,
        "line breaks",
        id="crlf-header-injection",
    ),
    pytest.param(*_json(email="ann@example.com\nX-Evil: 1"), 400, "line breaks", id="lf-json"),
    pytest.param(*_form(email="a" * 10_240 + "@example.com"), 400, "longer than", id="10kb-email"),
    pytest.param(
        *_form(email="ann@example.com, bob@example.com"), 400, "not a valid", id="two-addresses"
    ),
    pytest.param(*_form(email='"ann"@example.com'), 400, "not a valid address", id="quoted"),
    pytest.param(*_form(email="ann@[127.0.0.1]"), 400, "not a valid address", id="ip-literal"),
    pytest.param(*_form(categories=["basketweaving"]), 400, "unknown category", id="unknown-cat"),
    pytest.param(*_json(categories=["ai", "Robotics2"]), 400, "unknown category", id="json-cat"),
    pytest.param(*_form(categories=[]), 400, "choose at least one", id="no-category"),
    pytest.param(*_form(categories=["ai\r\nX: y"]), 400, "line breaks", id="crlf-category"),
    pytest.param(*_form(categories=[TEN_KB]), 400, "longer than 40", id="10kb-category"),
    pytest.param(*_json(categories=["ai"] * 200), 400, "too many values", id="200-categories"),
    pytest.param(*_json(categories={"ai": True}), 400, "list of strings", id="cat-object"),
    pytest.param(*_form(frequency="hourly"), 400, "daily, weekly or both", id="bad-frequency"),
    pytest.param(*_form(frequency=""), 400, "frequency is required", id="no-frequency"),
    pytest.param(*_form(frequency="daily\r\n"), 400, "line breaks", id="crlf-frequency"),
    pytest.param(*_form(timezone="Mars/Olympus_Mons"), 400, "unknown IANA timezone", id="bad-tz"),
    pytest.param(*_form(timezone="../../etc/passwd"), 400, "unknown IANA timezone", id="tz-path"),
    pytest.param(*_form(timezone="localtime"), 400, "unknown IANA timezone", id="tz-host-own"),
    pytest.param(*_form(timezone="Factory"), 400, "unknown IANA timezone", id="tz-placeholder"),
    pytest.param(*_form(timezone=TEN_KB), 400, "longer than 64", id="10kb-timezone"),
    pytest.param(*_form(source="x\r\nBcc: y"), 400, "line breaks", id="crlf-source"),
    pytest.param(*_form(source=TEN_KB), 400, "longer than 1000", id="10kb-source"),
    pytest.param(*_json(email=12345), 400, "must be a string", id="json-number-email"),
    pytest.param(*_json(email=None), 400, "enter your email address", id="json-null-email"),
    pytest.param("raw-json", b"[1, 2, 3]", 400, "must be a JSON object", id="json-array"),
    pytest.param("raw-json", b'{"email": "ann@', 400, "not valid JSON", id="json-truncated"),
    pytest.param("raw-json", b"\xff\xfe{}", 400, "not valid JSON", id="json-not-utf8"),
    pytest.param(
        "raw-json",
        b'{"email": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        400,
        "not valid JSON",
        id="json-nested-5000-deep",
    ),
    pytest.param(
        "raw-json", b'{"email": ' + b"9" * 5000 + b"}", 400, "not valid JSON", id="5k-int"
    ),
    pytest.param(*_json(email="ann\ud800@example.com"), 400, "not valid text", id="lone-surrogate"),
    pytest.param(*_json(source="\udfff"), 400, "source is not valid text", id="surrogate-source"),
    pytest.param(*_json(timezone="Europe/\ud800"), 400, "not valid text", id="surrogate-tz"),
    pytest.param(*_json(email="ann@example.com\u0000"), 400, "control characters", id="nul"),
    pytest.param("text", b"email=ann@example.com", 415, "Send a form or JSON", id="text-plain"),
    pytest.param("xml", b"<email>ann@example.com</email>", 415, "Send a form", id="xml"),
    pytest.param("no-csrf", GOOD, 403, "form has expired", id="form-without-csrf"),
    pytest.param("forged-csrf", GOOD, 403, "form has expired", id="form-forged-csrf"),
    pytest.param("csrf-no-cookie", GOOD, 403, "form has expired", id="csrf-without-cookie"),
    pytest.param("huge", b"email=" + b"a" * 200_000, 413, "larger than", id="200kb-body"),
    pytest.param("upload", GOOD, 400, "could not be read", id="file-upload"),
]


def _send(web: WebRig, how: str, payload: Any) -> Any:
    client = web.client
    if how in ("form", "no-csrf", "forged-csrf", "csrf-no-cookie", "upload"):
        token = csrf_of(client.get("/subscribe").text)
        data = dict(payload)
        if how == "form":
            data["csrf"] = token
        elif how == "forged-csrf":
            data["csrf"] = token[:-4] + "AAAA"
        elif how == "csrf-no-cookie":
            data["csrf"] = token
            client.cookies.clear()
        if how == "upload":
            data["csrf"] = token
            return client.post("/subscribe", data=data, files={"photo": ("a.txt", b"hello")})
        return client.post("/subscribe", data=data)
    if how == "json":
        return client.post("/subscribe", content=json.dumps(payload).encode(), headers=_ct("json"))
    content_types = {
        "raw-json": "application/json",
        "text": "text/plain",
        "xml": "application/xml",
        "huge": "application/x-www-form-urlencoded",
    }
    return client.post("/subscribe", content=payload, headers={"Content-Type": content_types[how]})


def _ct(kind: str) -> dict[str, str]:
    return {"Content-Type": f"application/{kind}"}


@pytest.mark.parametrize(("how", "payload", "status", "words"), CASES)
def test_malformed_signup_is_refused_and_changes_nothing(
    web: WebRig, how: str, payload: Any, status: int, words: str
) -> None:
    answer = _send(web, how, payload)
    assert answer.status_code == status
    if "json" in answer.headers["content-type"]:
        message = answer.json()["error"]
    else:
        assert answer.headers["content-type"].startswith("text/html")
        message = text_of(answer.text)
    assert words.lower() in message.lower()
    assert "Traceback" not in answer.text
    assert web.count(Subscriber) == 0
    assert web.smtp.messages == []


def test_the_signup_form_keeps_what_was_typed_after_an_error(web: WebRig) -> None:
    answer = signup_form(web, "ann@example", categories=["quantum", "spacetech"])
    assert answer.status_code == 400
    assert 'value="ann@example"' in answer.text
    assert 'value="quantum" class="cat" checked' in answer.text
    assert 'role="alert"' in answer.text


@pytest.fixture
def reader(web: WebRig) -> dict[str, str]:
    signup_form(web, "ann@example.com")
    links = links_in(web.smtp.messages[-1].data)
    web.client.get(links["confirm"])
    return links


PREFERENCE_CASES: list[Any] = [
    pytest.param("missing-csrf", {}, 403, id="missing-csrf"),
    pytest.param("forged-csrf", {}, 403, id="forged-csrf"),
    pytest.param("signup-csrf", {}, 403, id="csrf-of-another-form"),
    pytest.param("other-reader-csrf", {}, 403, id="csrf-of-another-reader"),
    pytest.param("no-cookie", {}, 403, id="csrf-without-cookie"),
    pytest.param("ok", {"action": "explode"}, 400, id="unknown-action"),
    pytest.param("ok", {"categories": ["warp-drives"]}, 400, id="unknown-category"),
    pytest.param("ok", {"timezone": "Atlantis/Capital"}, 400, id="unknown-timezone"),
    pytest.param("ok", {"frequency": "\r\nhourly"}, 400, id="crlf-frequency"),
    pytest.param("ok", {"action": "delete"}, 400, id="delete-without-confirming"),
]


@pytest.mark.parametrize(("csrf", "changes", "status"), PREFERENCE_CASES)
def test_bad_preference_posts_are_refused_and_change_nothing(
    web: WebRig, reader: dict[str, str], csrf: str, changes: dict[str, Any], status: int
) -> None:
    page = web.client.get(reader["preferences"])
    token = csrf_of(page.text)
    if csrf == "forged-csrf":
        token = token[:-4] + "AAAA"
    elif csrf == "signup-csrf":
        token = csrf_of(web.client.get("/subscribe").text)
    elif csrf == "other-reader-csrf":
        signup_form(web, "bob@example.com")
        bob = links_in(web.smtp.messages[-1].data)
        token = csrf_of(web.client.get(bob["preferences"]).text)
    data: dict[str, Any] = {
        "action": "save",
        "categories": ["quantum"],
        "frequency": "weekly",
        "timezone": "Asia/Tokyo",
        **changes,
    }
    if csrf != "missing-csrf":
        data["csrf"] = token
    if csrf == "no-cookie":
        web.client.cookies.clear()
    answer = web.client.post(reader["preferences"], data=data)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in answer.text
    after = web.subscriber("ann@example.com")
    assert after is not None
    assert after.status == SubscriberStatus.ACTIVE
    assert after.category_slugs == ["ai", "robotics"]
    assert (after.wants_daily, after.wants_weekly, after.timezone) == (True, False, "Europe/Paris")


@pytest.mark.parametrize(
    ("asked", "location"),
    [
        ("/archive/ai/", "https://digest.example.com/archive/ai"),
        (
            "/archive/ai/?before=2026-11-30",
            "https://digest.example.com/archive/ai?before=2026-11-30",
        ),
        ("/subscribe/", "https://digest.example.com/subscribe"),
    ],
)
def test_a_trailing_slash_is_redirected_on_the_sites_own_address(
    web: WebRig, asked: str, location: str
) -> None:
    """Starlette built this redirect from the Host header: a proxy passing a forged one on
    would have sent readers to another site."""
    answer = web.client.get(asked, headers={"Host": "evil.example"}, follow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["location"] == location


def test_a_trailing_slash_on_no_address_is_still_not_found(web: WebRig) -> None:
    for path in ("/nothing-here/", "/%2F%2Fevil.example/", "/archive/ai/daily/2026-11-30/x/"):
        answer = web.client.get(path, follow_redirects=False)
        assert answer.status_code == 404, path
        assert "There is nothing at this address" in text_of(answer.text)
