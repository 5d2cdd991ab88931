"""How large a request body may be, and for whom: the API's and the CSV import's large limit
is the operator's. A stranger's body is cut at the page limit before any of it is held,
whatever the path, the method or the credentials it claims."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from digestd.models import Article
from tests.admin_client import form_csrf, sign_in
from tests.admin_seed import AUTH
from tests.conftest import WebRig
from tests.helpers import SAMPLE_ARTICLE

MEGABYTE = b"x" * (1024 * 1024)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic eDp4"}],
    ids=["no-token", "wrong-token", "basic"],
)
@pytest.mark.parametrize("path", ["/api/articles", "/api/no-such-route", "/admin/import"])
def test_a_stranger_cannot_send_a_body_larger_than_a_page_form(
    web: WebRig, path: str, headers: dict[str, str]
) -> None:
    """Before, these paths took 8 MB from anybody: the body was read whole, and only then
    was the token checked (a thousand connections held gigabytes)."""
    answer = web.client.post(
        path, content=MEGABYTE, headers={"Content-Type": "application/json", **headers}
    )
    assert answer.status_code == 413
    assert "larger than 64 KB" in answer.text
    with web.service.sessions() as session:
        assert session.query(Article).count() == 0


def test_a_stranger_streaming_a_body_is_cut_at_the_page_limit(web: WebRig) -> None:
    """No Content-Length to refuse up front (chunked): the body is read to the limit only."""

    def chunks() -> Iterator[bytes]:
        for _ in range(16):
            yield MEGABYTE[:65536]

    answer = web.client.post("/api/articles", content=chunks())
    assert answer.status_code == 413


def test_the_operator_may_send_the_api_a_large_body(web: WebRig) -> None:
    long = "An analysis that runs on. " * 200  # ~5 KB an article, ~250 KB in all
    articles = [
        dict(SAMPLE_ARTICLE, id=f"story-{n}", url=f"https://example.com/{n}", analysis=long)
        for n in range(50)
    ]
    answer = web.client.post("/api/articles", json=articles, headers=AUTH)
    assert answer.status_code == 200, answer.text
    with web.service.sessions() as session:
        assert session.query(Article).count() == 50


def test_a_signed_in_operator_may_upload_a_large_list(web: WebRig) -> None:
    rows = "".join(f"reader{n}@example.com,ai,daily,UTC\n" for n in range(5000))
    sign_in(web.client)
    page = web.client.get("/admin/import")
    answer = web.client.post(
        "/admin/import",
        data={"csrf": form_csrf(page.text, "/admin/import")},
        files={"file": ("list.csv", f"email,categories,frequency,timezone\n{rows}", "text/csv")},
    )
    assert len(rows) > 128 * 1024
    assert answer.status_code == 303, answer.text


def test_a_list_over_the_uploads_limit_is_told_where_it_can_go(web: WebRig) -> None:
    """About 150 000 readers make 8 MB: not a bare 413, but the command without a limit."""
    sign_in(web.client)
    page = web.client.get("/admin/import")
    answer = web.client.post(
        "/admin/import",
        data={"csrf": form_csrf(page.text, "/admin/import")},
        files={"file": ("list.csv", b"email,categories,frequency,timezone\n" + 9 * MEGABYTE)},
    )
    assert answer.status_code == 413
    assert "larger than 8192 KB" in answer.text
    assert "digestd subscribers import" in answer.text and 'href="/admin/import"' in answer.text
