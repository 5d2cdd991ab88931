"""The operations page over HTTP: sign-in with the admin token, the session cookie's
attributes and lifetime, CSRF on both forms, and what the page shows. The charts' drawing
is checked on its own at the end."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import time_machine
from starlette.testclient import TestClient

from digestd.config import load_settings
from digestd.models import AdminSignout, Delivery, DeliveryStatus
from digestd.service import Service
from digestd.web.app import create_app
from digestd.web.charts import Series, bar_chart, nice_scale
from tests.admin_seed import TOKEN, delivery, edition, month_of_activity, reader
from tests.conftest import WebRig
from tests.web_helpers import csrf_of, text_of

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)


def _sign_in(web: WebRig, token: str = TOKEN) -> httpx.Response:
    page = web.client.get("/admin")
    # Starlette types its TestClient against httpx2; with the httpx we pin, mypy sees Any.
    answer: httpx.Response = web.client.post(
        "/admin/login", data={"csrf": csrf_of(page.text), "token": token}
    )
    return answer


def test_the_page_asks_for_the_token_first(web: WebRig) -> None:
    answer = web.client.get("/admin")
    assert answer.status_code == 200
    assert "Operator sign-in" in answer.text and 'type="password"' in answer.text
    assert "digestd_admin" not in answer.headers.get("set-cookie", "")


def test_signing_in_sets_a_strict_http_only_secure_cookie_for_12_hours(web: WebRig) -> None:
    answer = _sign_in(web)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("digestd_admin=")
    for attribute in ("HttpOnly", "Max-Age=43200", "Path=/admin", "SameSite=strict", "Secure"):
        assert attribute in cookie
    page = web.client.get("/admin")
    assert page.status_code == 200 and "<h1>Operations</h1>" in page.text


def test_the_cookie_is_not_secure_over_plain_http(web_env: dict[str, str]) -> None:
    service = Service.build(load_settings(web_env))
    with TestClient(create_app(service), base_url="http://127.0.0.1:8080") as client:
        page = client.get("/admin")
        answer = client.post(
            "/admin/login",
            data={"csrf": csrf_of(page.text), "token": TOKEN},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert "Secure" not in answer.headers["set-cookie"]
    service.engine.dispose()


def test_a_wrong_token_is_a_401_with_the_form_again(web: WebRig) -> None:
    answer = _sign_in(web, "admin-" + "y" * 24)
    assert answer.status_code == 401
    assert "That is not the admin token." in text_of(answer.text)
    assert "digestd_admin" not in answer.headers.get("set-cookie", "")
    assert "Operator sign-in" in web.client.get("/admin").text


def test_sign_in_without_the_csrf_token_is_refused(web: WebRig) -> None:
    web.client.get("/admin")
    answer = web.client.post("/admin/login", data={"token": TOKEN})
    assert answer.status_code == 403
    assert "digestd_admin" not in answer.headers.get("set-cookie", "")


def test_guessing_is_slowed_down(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        codes = [_sign_in(web, f"guess-{i}").status_code for i in range(11)]
    assert codes == [401] * 10 + [429]


def test_a_forged_or_expired_session_is_not_signed_in(web: WebRig) -> None:
    web.client.cookies.set("digestd_admin", "eyJ0IjoiMTIzIn0.forged.sig", path="/admin")
    assert "Operator sign-in" in web.client.get("/admin").text
    web.client.cookies.clear()
    with time_machine.travel(NOW, tick=False):
        _sign_in(web)
    with time_machine.travel(NOW + timedelta(hours=11, minutes=59), tick=False):
        assert "<h1>Operations</h1>" in web.client.get("/admin").text
    with time_machine.travel(NOW + timedelta(hours=12, minutes=1), tick=False):
        assert "Operator sign-in" in web.client.get("/admin").text


def test_changing_the_admin_token_signs_everybody_out(web: WebRig, web_env: dict[str, str]) -> None:
    _sign_in(web)
    cookie = web.client.cookies.get("digestd_admin")
    assert cookie
    changed = Service.build(
        load_settings({**web_env, "DIGESTD_ADMIN_TOKEN": "new-admin-token-Hq3v8Wc5Tn1Y"})
    )
    with TestClient(create_app(changed), base_url="https://digest.example.com") as client:
        client.cookies.set("digestd_admin", cookie, path="/admin")
        assert "Operator sign-in" in client.get("/admin").text
    changed.engine.dispose()


def test_signing_out_needs_the_form_and_drops_the_cookie(web: WebRig) -> None:
    _sign_in(web)
    page = web.client.get("/admin")
    assert web.client.post("/admin/logout", data={"csrf": "forged"}).status_code == 403
    answer = web.client.post("/admin/logout", data={"csrf": csrf_of(page.text)})
    assert answer.status_code == 303
    assert 'digestd_admin=""' in answer.headers["set-cookie"]
    assert "Operator sign-in" in web.client.get("/admin").text


def test_a_session_signed_out_stays_out_even_with_a_copy_of_its_cookie(web: WebRig) -> None:
    """Sign out on a borrowed machine, or after a cookie leaked: the copy taken before kept
    opening the admin for its remaining 12 hours. Another operator's session goes on."""
    app, base = web.client.app, "https://digest.example.com"
    with (
        TestClient(app, base_url=base, follow_redirects=False) as thief,
        TestClient(app, base_url=base, follow_redirects=False) as other,
    ):
        with time_machine.travel(NOW, tick=False):
            _sign_in(web)
            thief.cookies.set("digestd_admin", web.client.cookies["digestd_admin"], path="/admin")
            assert "<h1>Operations</h1>" in thief.get("/admin").text
            assert _sign_in_with(other).status_code == 303
            page = web.client.get("/admin")
            signed_out = web.client.post("/admin/logout", data={"csrf": csrf_of(page.text)})
            assert signed_out.status_code == 303
            assert "Operator sign-in" in thief.get("/admin").text
            assert thief.post("/admin/feeds", data={}).status_code == 401
            assert "<h1>Operations</h1>" in other.get("/admin").text  # its own session
            _sign_in(web)  # and the operator may sign in again
            assert "<h1>Operations</h1>" in web.client.get("/admin").text
        with time_machine.travel(NOW + timedelta(hours=13), tick=False):
            _sign_in_with(other)
            page = other.get("/admin")
            other.post("/admin/logout", data={"csrf": csrf_of(page.text)})
    with web.service.sessions() as session:  # the first sign-out's row went with its cookie
        assert session.query(AdminSignout).count() == 1


def _sign_in_with(client: TestClient) -> httpx.Response:
    page = client.get("/admin")
    answer: httpx.Response = client.post(
        "/admin/login", data={"csrf": csrf_of(page.text), "token": TOKEN}
    )
    return answer


def test_without_an_admin_token_the_page_is_a_403(env: dict[str, str]) -> None:
    service = Service.build(load_settings(env))
    with TestClient(create_app(service), base_url="https://digest.example.com") as client:
        for answer in (client.get("/admin"), client.post("/admin/login", data={"token": "x"})):
            assert answer.status_code == 403
            assert "DIGESTD_ADMIN_TOKEN" in text_of(answer.text)
    service.engine.dispose()


def test_the_page_shows_the_queue_and_thirty_days_in_utc(web: WebRig) -> None:
    with web.service.sessions.begin() as session:
        totals = month_of_activity(session, NOW, readers=12)
    with time_machine.travel(NOW, tick=False):
        _sign_in(web)
        page = web.client.get("/admin")
    words = text_of(page.text)
    assert "As of Sun 29 Nov 2026, 09:30 UTC" in words
    assert "Each bar is one UTC day (00:00–24:00 UTC)" in words
    assert "Last 30 days Oct 31 – Nov 29" in words
    assert f"Sent {totals['sent']:,} in 30 days" in words
    assert f"Unsubscribes {totals['unsubscribes']} in 30 days" in words
    assert f"Suppressed {totals['bounces']} in 30 days" in words
    assert "Last daily 2026-11-29 :" in words  # the date links to the edition's report
    assert page.text.count("<svg") == 6  # and clicks, clickers (test_admin_engagement.py)
    assert "<script" not in page.text  # charts are drawn on the server
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp
    rows = re.findall(r'<tr><th scope="row">', page.text)
    assert len(rows) == 30
    # the bounce policy, rule by rule, as digestd.readers.bounce_policy applies it
    assert "Bounce policy RFC 3463, first matching rule" in words
    assert (
        "5.1.1 rcpt, end-of-data, report hard the message fails; the address is suppressed" in words
    )
    assert "5.7.* anywhere failed-not-address the message fails; the reader stays" in words


def test_the_page_reloads_itself_while_an_edition_is_going_out(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        _sign_in(web)
        assert "location.reload" not in web.client.get("/admin").text
        with web.service.sessions.begin() as session:
            issue = edition(session, "daily", "2026-11-29", NOW)
            person = reader(session, "late@example.com", created_at=NOW)
            row = delivery(session, person, issue, DeliveryStatus.QUEUED, NOW + timedelta(hours=1))
        assert "location.reload" not in web.client.get("/admin").text  # due later: waits
        with web.service.sessions.begin() as session:
            session.get_one(Delivery, row.id).due_at = NOW - timedelta(minutes=1)
        assert "location.reload" in web.client.get("/admin").text


# --- the charts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peak", "top", "step"),
    [(0, 5, 1), (1, 1, 1), (7, 8, 2), (38, 40, 10), (99, 100, 20), (1234, 1500, 500)],
)
def test_axes_use_round_steps_that_reach_the_peak(peak: int, top: int, step: int) -> None:
    assert nice_scale(peak) == (top, step)


def test_a_chart_is_an_accessible_image_with_a_tooltip_per_day() -> None:
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(14)]
    values = [0, 3, 5, 2, 0, 0, 9, 1, 1, 4, 0, 2, 8, 3]
    svg = str(bar_chart(Series("sent", "Sent <&>", "emails sent", days, values)))
    assert svg.startswith('<svg class="chart c-sent" viewBox="0 0 420 190" role="img"')
    assert '<title id="chart-sent-t">Sent &lt;&amp;&gt; per UTC day</title>' in svg
    assert "38 emails sent over 14 days; most on Nov 7: 9." in svg
    assert svg.count('class="bar') == 10 and svg.count('class="hit"') == 4
    assert "<title>Sat Nov 7: 9 emails sent</title>" in svg
    assert "<title>Sat Nov 14: 3 emails sent (today so far)</title>" in svg
    assert re.findall(r'y="182" text-anchor="(?:middle|end)">([^<]+)<', svg) == ["Nov 7", "Nov 14"]


@pytest.mark.parametrize(
    "path",
    [
        "/admin/subscribers/{n}",
        "/admin/subscribers/{n}/preview?kind=daily",
        "/admin/editions/{n}",
        "/admin/digests/{n}",
    ],
)
def test_a_number_past_any_row_is_a_404_not_a_database_error(web: WebRig, path: str) -> None:
    """An id beyond the databases' 64-bit integers used to reach the database (a 500)."""
    assert _sign_in(web).status_code == 303
    for n in ("0", "2147483648", "999999999999999999", "99999999999999999999999"):
        answer = web.client.get(path.format(n=n))
        assert answer.status_code == 404, (n, answer.text[:300])
