"""The signup form's answers to mistakes: every problem inline next to its field, every
value kept, HTTP 400 naming the field, nothing stored or sent; and who may post it (our
page with its CSRF token, the site origins of DIGESTD_SITE_ORIGINS without it)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from digestd.models import Subscriber
from tests.conftest import WebRig
from tests.web_helpers import SIGNUP, csrf_of, signup_form, text_of

SITE = "https://news.example.com"


@pytest.fixture
def web_env(web_env: dict[str, str]) -> dict[str, str]:
    return {**web_env, "DIGESTD_SITE_ORIGINS": f"{SITE}, http://localhost:3000"}


def _inline(page: str, name: str) -> str:
    """The error shown under a field, which the field points at (aria-describedby)."""
    match = re.search(rf'<p class="field-error" id="{name}-error">([^<]*)</p>', page)
    assert match, f"no inline error for {name}"
    assert f'aria-describedby="{name}-error' in page or f"{name}-error" in page.split(match[0])[0]
    return html.unescape(match.group(1))


def _nothing_happened(web: WebRig) -> None:
    assert web.count(Subscriber) == 0
    assert web.smtp.messages == []


def test_without_javascript_the_page_says_it_cannot_tell_the_timezone(web: WebRig) -> None:
    """A reader with scripts off was signed up for 07:00 UTC (23:00 in Los Angeles) with
    nothing to say the zone had not been detected."""
    page = web.client.get("/subscribe").text
    hint = re.search(r"<noscript>(.*?)</noscript>", page, re.S)
    assert hint is not None and 'data-detect="1"' in page
    assert "cannot tell your timezone: type your city" in text_of(hint.group(1))
    assert "at 7:00 UTC time" in text_of(hint.group(1))


def test_an_empty_email_is_shown_next_to_the_field_with_every_choice_kept(web: WebRig) -> None:
    answer = signup_form(
        web, "", categories=["quantum", "spacetech"], frequency="both", timezone="Asia/Tokyo"
    )
    assert answer.status_code == 400
    page = answer.text
    assert _inline(page, "email") == "Enter your email address, e.g. you@example.com."
    assert 'id="email" name="email" value=""' in page and 'aria-invalid="true"' in page
    # The alert names the field as its label reads ("Your email"), in its own sentence.
    assert "Please check your email: it is marked below." in text_of(page).replace(" :", ":")
    assert 'value="quantum" class="cat" checked' in page
    assert 'value="spacetech" class="cat" checked' in page
    assert 'value="ai" class="cat">' in page
    assert 'value="both" checked' in page
    assert 'id="timezone" name="timezone" value="Asia/Tokyo"' in page
    assert 'data-detect="1"' not in page  # the typed zone stays; the script does not replace it
    assert "Quantum, SpaceTech" in text_of(page)  # the summary of the topics kept
    _nothing_happened(web)
    # The page can be sent again as it is, with the address filled in.
    again = web.client.post(
        "/subscribe",
        data={
            "csrf": csrf_of(page),
            "email": "ann@example.com",
            "categories": ["quantum", "spacetech"],
            "frequency": "both",
            "timezone": "Asia/Tokyo",
        },
    )
    assert again.status_code == 200 and "Check your inbox" in again.text
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.category_slugs == ["quantum", "spacetech"]


def test_every_problem_is_named_at_once_each_by_its_field(web: WebRig) -> None:
    answer = signup_form(
        web, "ann@", categories=[], frequency="hourly", timezone="Atlantis/Capital"
    )
    assert answer.status_code == 400
    page = answer.text
    assert "not a valid address" in _inline(page, "email")
    assert _inline(page, "categories") == "Choose at least one category."
    assert "daily, weekly or both" in _inline(page, "frequency")
    assert "Unknown IANA timezone 'Atlantis/Capital'" in _inline(page, "timezone")
    assert (
        "Please check your email, your topics, how often you get digests and your timezone: "
        "each is marked below." in text_of(page).replace(" ,", ",").replace(" :", ":")
    )
    # the summary leads to each field; the first refused one has the focus
    for target in ("email", "cat-all", "frequency-daily", "timezone"):
        assert f'<a href="#{target}">' in page
    assert page.count("autofocus") == 1 and re.search(r'id="email"[^>]*autofocus', page)
    assert '<details class="topics" id="topics" open>' in page  # the tiles, to choose some
    assert 'value="Atlantis/Capital"' in page and 'value="ann@"' in page
    _nothing_happened(web)


def test_a_reserved_domain_is_refused_in_plain_words(web: WebRig) -> None:
    answer = signup_form(web, "dana@reader.test")
    assert answer.status_code == 400
    said = _inline(answer.text, "email")
    assert said == (
        "'dana@reader.test' is not a valid address: mail cannot reach reader.test, a name "
        "reserved for tests and local networks."
    )
    assert "@-sign" not in answer.text and "special-use" not in answer.text
    assert "Please check your email: it is" in text_of(answer.text).replace(" :", ":")
    refused = web.client.post("/subscribe", json={**SIGNUP, "email": "dana@reader.test"})
    assert refused.status_code == 400
    assert refused.json() == {"error": f"Email: {said}", "field": "email"}
    _nothing_happened(web)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("email", "a" * 400 + "@example.com", "longer than 320"),
        ("timezone", "Europe/" + "x" * 100, "longer than 64"),
        ("timezone", "../../etc/passwd", "Unknown IANA timezone"),
        ("email", "ann@example.com\r\nBcc: victim@example.org", "line breaks"),
    ],
)
def test_hostile_values_are_refused_inline_and_nothing_is_stored(
    web: WebRig, field: str, value: str, says: str
) -> None:
    answer = signup_form(web, **{"email": "ann@example.com", field: value})
    assert answer.status_code == 400
    assert says in _inline(answer.text, field)
    assert "<script>" not in answer.text.split("<body")[1].split("<script")[0]
    _nothing_happened(web)


ZONE_LA = "America/Los_Angeles"


def test_a_timezone_is_read_as_people_type_it(web: WebRig) -> None:
    assert signup_form(web, "ann@example.com", timezone=" america/new york ").status_code == 200
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.timezone == "America/New_York"
    assert signup_form(web, "bob@example.com", timezone="Asia/Calcutta").status_code == 200
    bob = web.subscriber("bob@example.com")
    assert bob is not None and bob.timezone == "Asia/Kolkata"
    # The hint says "a city such as Paris or Los Angeles": the city alone is enough.
    for n, (typed, zone) in enumerate([("Paris", "Europe/Paris"), ("los angeles", ZONE_LA)]):
        assert signup_form(web, f"c{n}@example.com", timezone=typed).status_code == 200
        city = web.subscriber(f"c{n}@example.com")
        assert city is not None and city.timezone == zone


ALIASES = ["Asia/Chungking", "Asia/Dacca", "Asia/Thimbu", "America/Porto_Acre", "Asia/Tel_Aviv"]


def test_the_zone_list_offers_zones_not_their_old_aliases_which_are_still_accepted(
    web: WebRig,
) -> None:
    offered = re.findall(r'<option value="([^"]+)"', web.client.get("/subscribe").text)
    for zone in ("America/Los_Angeles", "Asia/Kolkata", "Europe/Amsterdam", "UTC"):
        assert zone in offered
    for alias in [*ALIASES, "America/Santa_Isabel", "Asia/Calcutta", "US/Eastern"]:
        assert alias not in offered
    assert len(offered) == len(set(offered))
    # A reader, or a form, may still send one: it is the zone it stands for.
    for n, alias in enumerate([*ALIASES, "montreal"]):
        assert signup_form(web, f"r{n}@example.com", timezone=alias).status_code == 200
        reader = web.subscriber(f"r{n}@example.com")
        assert reader is not None and reader.timezone in (alias, "America/Montreal")


def test_an_offset_typed_as_a_timezone_is_answered_with_what_to_give_instead(
    web: WebRig,
) -> None:
    """The picker lists the places on an offset; an offset alone names no place (its
    summer time differs) and is refused, saying so."""
    answer = signup_form(web, "ann@example.com", timezone="UTC+05:30")
    assert answer.status_code == 400
    assert "is an offset, not a timezone" in _inline(answer.text, "timezone")
    _nothing_happened(web)


def test_an_expired_form_comes_back_with_the_choices_kept(web: WebRig) -> None:
    web.client.get("/subscribe")
    web.client.cookies.clear()  # a day later: the CSRF cookie is gone
    answer = web.client.post(
        "/subscribe",
        data={"csrf": "stale", "email": "ann@example.com", **SIGNUP, "frequency": "weekly"},
    )
    assert answer.status_code == 403
    assert "form has expired" in text_of(answer.text)
    assert 'value="ann@example.com"' in answer.text and 'value="weekly" checked' in answer.text
    _nothing_happened(web)
    again = web.client.post(
        "/subscribe", data={"csrf": csrf_of(answer.text), "email": "ann@example.com", **SIGNUP}
    )
    assert again.status_code == 200 and web.count(Subscriber) == 1


# --- who may post it ---------------------------------------------------------------------


def _post(web: WebRig, origin: str | None, *, token: bool, as_json: bool = False) -> Any:
    csrf = csrf_of(web.client.get("/subscribe").text)
    headers = {"Origin": origin} if origin is not None else {}
    body: dict[str, Any] = {"email": "ann@example.com", **SIGNUP}
    if as_json:
        return web.client.post("/subscribe", json=body, headers=headers)
    if token:
        body["csrf"] = csrf
    return web.client.post("/subscribe", data=body, headers=headers)


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_a_foreign_origin_is_refused_with_nothing_stored(web: WebRig, as_json: bool) -> None:
    answer = _post(web, "https://evil.example", token=True, as_json=as_json)
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers
    if as_json:
        assert answer.json()["field"] == "origin"
    else:
        assert "site that may not post it" in text_of(answer.text)
    _nothing_happened(web)


def test_a_site_origin_may_post_the_form_without_a_token(web: WebRig) -> None:
    answer = _post(web, SITE, token=False)
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert answer.headers["access-control-allow-origin"] == SITE
    assert "Origin" in answer.headers["vary"]
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.status == "pending"
    assert len(web.smtp.messages) == 1
    json_answer = _post(web, "http://localhost:3000", token=False, as_json=True)
    assert json_answer.status_code == 202
    assert json_answer.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_a_site_origins_mistake_comes_back_as_our_form_ready_to_send_again(web: WebRig) -> None:
    answer = web.client.post("/subscribe", data={**SIGNUP, "email": ""}, headers={"Origin": SITE})
    assert answer.status_code == 400
    assert _inline(answer.text, "email").startswith("Enter your email")
    assert answer.headers["access-control-allow-origin"] == SITE
    _nothing_happened(web)


@pytest.mark.parametrize("origin", [None, "null", "https://digest.example.com"])
def test_our_own_pages_still_need_the_csrf_token(web: WebRig, origin: str | None) -> None:
    # Our pages send "Origin: null" (Referrer-Policy: no-referrer) or their own origin.
    refused = _post(web, origin, token=False)
    assert refused.status_code == 403
    _nothing_happened(web)
    assert _post(web, origin, token=True).status_code == 200
    assert web.count(Subscriber) == 1


def test_the_cors_preflight_answers_site_origins_only(web: WebRig) -> None:
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    ok = web.client.options("/subscribe", headers={"Origin": SITE, **asked})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == SITE
    assert ok.headers["access-control-allow-methods"] == "POST"
    assert ok.headers["access-control-allow-headers"] == "Content-Type"
    assert "access-control-allow-credentials" not in ok.headers
    foreign = web.client.options("/subscribe", headers={"Origin": "https://evil.example", **asked})
    assert foreign.status_code == 403 and "access-control-allow-origin" not in foreign.headers
    other_path = web.client.options("/api/articles", headers={"Origin": SITE, **asked})
    assert "access-control-allow-origin" not in other_path.headers
    _nothing_happened(web)
