"""The operator's door over HTTP: wrong admin tokens throttled per client across the
``/admin`` form and the API's bearer header together, and one log line per admin action."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import time_machine
from starlette.testclient import TestClient

from digestd.models import Article, Subscriber
from tests.admin_seed import AUTH, TOKEN
from tests.conftest import WebRig
from tests.helpers import SAMPLE_ARTICLE
from tests.log_lines import events
from tests.test_bounces import ARF
from tests.web_helpers import csrf_of, signup_form

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _sign_in(client: TestClient, token: str) -> int:
    page = client.get("/admin")
    answer: httpx.Response = client.post(
        "/admin/login", data={"csrf": csrf_of(page.text), "token": token}
    )
    return answer.status_code


def _stats(client: TestClient, token: str) -> int:
    answer: httpx.Response = client.get("/api/stats", headers=_bearer(token))
    return answer.status_code


def _elsewhere(web: WebRig) -> TestClient:
    """A second client at another address, talking to the same running app."""
    return TestClient(
        web.client.app,
        base_url="https://digest.example.com",
        client=("203.0.113.9", 40000),
        follow_redirects=False,
    )


def test_bearer_guesses_are_throttled_and_then_even_the_right_token_waits(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        codes = [_stats(web.client, f"guess-{i}-0123456789abcdefghij") for i in range(10)]
        assert codes == [401] * 10
        # Locked out: a lucky guess must not be told apart from a wrong one.
        answer = web.client.get("/api/stats", headers=AUTH)
        assert answer.status_code == 429 and "wrong admin tokens" in answer.json()["error"]
        assert answer.headers["retry-after"] == "900"  # the 15 minutes of the allowance
        assert _stats(_elsewhere(web), TOKEN) == 200  # another client is not locked out
        clock.shift(timedelta(minutes=5))
        assert web.client.get("/api/stats", headers=AUTH).headers["retry-after"] == "600"
        clock.shift(timedelta(minutes=11))
        assert _stats(web.client, TOKEN) == 200


def test_the_form_and_the_api_share_one_allowance(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        assert [_sign_in(web.client, f"form-guess-{i}") for i in range(6)] == [401] * 6
        assert [_stats(web.client, f"api-guess-{i}") for i in range(4)] == [401] * 4
        assert _stats(web.client, TOKEN) == 429
        assert _sign_in(web.client, TOKEN) == 429
        assert "digestd_admin" not in web.client.cookies


def test_requests_without_a_token_use_up_no_allowance(web: WebRig) -> None:
    """An uptime check that sends no Authorization header guesses nothing: it must not
    lock the operator's scripts on the same address out."""
    with time_machine.travel(NOW, tick=False):
        assert {web.client.get("/api/stats").status_code for _ in range(30)} == {401}
        assert _stats(web.client, TOKEN) == 200
        assert [_stats(web.client, f"guess-{i}-0123456789abcdefghij") for i in range(10)] == [
            401
        ] * 10
        assert _stats(web.client, TOKEN) == 429  # guesses still count


def test_the_right_token_never_uses_up_the_allowance(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        assert {_stats(web.client, TOKEN) for _ in range(30)} == {200}
        assert _sign_in(web.client, TOKEN) == 303


def test_each_admin_action_is_one_line_with_its_outcome(
    web: WebRig, admin_log: Callable[[], str]
) -> None:
    signup_form(web, "ann.reader@example.com")
    api = web.client
    bad = dict(SAMPLE_ARTICLE, id="bad", url="not a url")
    answer = api.post("/api/articles", json=[SAMPLE_ARTICLE, bad], headers=AUTH)
    assert answer.status_code == 200 and web.count(Article) == 1
    assert api.get("/api/subscribers/export", headers=AUTH).status_code == 200
    trigger = {"kind": "daily", "emails": ["ann.reader@example.com"]}
    assert api.post("/api/editions/trigger", json=trigger, headers=AUTH).status_code == 200
    raw = {"Content-Type": "message/rfc822", **AUTH}
    assert api.post("/api/bounces", content=ARF, headers=raw).status_code == 200
    assert api.post("/api/articles", content=b"{", headers=AUTH).status_code == 415
    assert _stats(api, "wrong-token-0123456789abcdefgh") == 401
    assert _sign_in(api, TOKEN) == 303
    page = api.get("/admin")
    assert api.post("/admin/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
    assert api.get("/api/stats", headers=AUTH).status_code == 200  # a read: not logged

    log = admin_log()
    client = {"client": "203.0.113.10"}
    expected = [
        {"action": "articles.add", "outcome": "ok", **client, "status": "200"}
        | {"added": "1", "updated": "0", "rejected": "1"},
        {"action": "subscribers.export", "outcome": "ok", **client, "status": "200"},
        {"action": "editions.trigger", "outcome": "ok", **client, "status": "200"}
        | {"kind": "daily", "queued": "0"},
        {"action": "bounces.report", "outcome": "ok", **client, "status": "200"}
        | {"report": "unmatched", "suppressed": "false"},
        {"action": "articles.add", "outcome": "refused", **client, "status": "415"},
        {"action": "api", "outcome": "wrong-token", **client},
        {"action": "page.sign_in", "outcome": "ok", **client},
        {"action": "page.sign_out", "outcome": "ok", **client},
    ]
    own = {"time", "level", "logger", "event"}
    lines = events(log, "admin")
    assert [{k: v for k, v in line.items() if k not in own} for line in lines] == expected
    assert all(line["level"] == "info" and line["logger"] == "digestd.admin" for line in lines)
    assert "ann.reader@example.com" not in log
    assert web.count(Subscriber) == 1


def test_a_lockout_is_logged_once_however_long_the_flood(
    web: WebRig, admin_log: Callable[[], str]
) -> None:
    with time_machine.travel(NOW, tick=False):
        codes = [_stats(web.client, f"guess-{i}-0123456789abcdefghij") for i in range(40)]
    assert codes == [401] * 10 + [429] * 30
    log = admin_log()
    assert [line["outcome"] for line in events(log, "admin")] == ["wrong-token"] * 10
    (locked,) = events(log, "admin.locked")
    assert locked["level"] == "warning" and locked["client"] == "203.0.113.10"
    assert locked["wrong_tokens"] == "10" and locked["minutes"] == "15"
