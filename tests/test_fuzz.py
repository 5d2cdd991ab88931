"""A fuzz pass (Hypothesis, derandomized so CI repeats it) over what strangers and feeds
send: ``POST /subscribe`` as a form and as JSON, ``POST /api/articles``, and
``digestd articles add``. Never a 5xx, never a traceback, and a batch's valid item is kept
whatever the items around it hold.

The app lives for the whole of one test (Hypothesis runs its examples against it, as a
real server takes requests one after the other), so the examples also meet each other's
stored rows.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from starlette.testclient import TestClient

from digestd.cli import main
from digestd.config import load_settings
from digestd.content.articles import KINDS
from digestd.content.categories import CATEGORIES
from digestd.models import Article, Subscriber, SubscriberStatus
from digestd.service import Service
from digestd.web.app import create_app
from digestd.web.context import WebPolicy
from tests.admin_seed import AUTH
from tests.conftest import ADMIN_TOKEN
from tests.helpers import SAMPLE_ARTICLE
from tests.web_helpers import csrf_of

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Every code point, lone surrogates included (JSON can carry them as "\ud800").
ANY_CHAR = st.characters(exclude_categories=())
SPECIAL = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "\r\nBcc: victim@example.com",
    "ann@example.com",
    "=cmd|x@example.com",
    "ANN+tag@Example.COM",
    "a" * 400,
    "ai",
    "daily",
    "both",
    "Europe/Paris",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "2026-02-05T09:00:00Z",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-05:00",
    "https://news.example.com/a",
    "javascript:alert(1)",
]
# Characters that broke something once: NUL (PostgreSQL text), lone surrogates (UTF-8),
# line breaks (headers, logs), a BOM, a line separator, a right-to-left override.
BAD_CHARS = ["\x00", "\ud800", "\udfff", "\r\n", "\n", "\ufeff", "\u2028", "\u202e", "\x7f"]
# Ordinary-looking text with one bad character somewhere: it passes the easy checks.
SPIKED = st.builds(
    lambda head, bad, tail: head + bad + tail,
    st.text(max_size=6),
    st.sampled_from(BAD_CHARS),
    st.text(max_size=6),
)
TEXT = st.one_of(st.text(ANY_CHAR, max_size=30), st.sampled_from(SPECIAL), SPIKED)
HUGE = st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 1e308, -0.0])
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE,
    st.floats(),  # nan and ±inf included
    TEXT,
)
JSON_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=8,
)
# Raw JSON text a decoder may not hold: nested thousands deep, an integer of 5 000 digits.
RAW_HOSTILE = ["[" * 3000 + "]" * 3000, '{"a":' * 3000 + "0" + "}" * 3000, "9" * 5000, "1e400"]
OFFSETS = [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12, minutes=-30))]
INSTANT = st.one_of(
    st.datetimes(timezones=st.sampled_from(OFFSETS)).map(datetime.isoformat),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+05:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999-05:00",
            "9999-12-31T23:59:59Z",
            "2026-02-05T09:00:00+23:59",
            "2026-02-05",
        ]
    ),
)


def _field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(plausible, JSON_VALUE)


ARTICLE = st.fixed_dictionaries(
    {},
    optional={
        "id": _field(TEXT),
        "url": _field(st.builds(lambda s: "https://a.example.com/" + s, TEXT)),
        "title": _field(TEXT),
        "published_at": _field(st.one_of(INSTANT, TEXT)),
        "categories": _field(st.lists(st.sampled_from(sorted(CATEGORIES)) | TEXT, max_size=3)),
        "kind": _field(st.sampled_from(KINDS)),
        "score": _field(st.floats() | st.integers(min_value=-(10**400), max_value=10**400)),
        "source": _field(TEXT),
        "why_it_matters": _field(TEXT),
        "key_takeaways": _field(st.lists(TEXT, max_size=3)),
        "companies": _field(st.lists(st.fixed_dictionaries({"name": TEXT}), max_size=2)),
        "image_url": _field(st.none() | TEXT),
    },
)
# Text twice: most fields are text, and a hostile string is the likeliest trouble.
FUZZ_VALUE = st.one_of(TEXT, TEXT, SCALAR, JSON_VALUE, INSTANT, st.lists(TEXT, max_size=3))


def _apply(base: dict[str, Any], changes: dict[str, Any], dropped: set[str]) -> dict[str, Any]:
    return {k: v for k, v in {**base, **changes}.items() if k not in dropped}


def _mutations(
    base: dict[str, Any], values: st.SearchStrategy[Any] = FUZZ_VALUE
) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with a few fields replaced or dropped: the rest of it stays valid, so the
    odd value gets past the first check and reaches the code behind it (storage, mail)."""
    fields = sorted(base)
    return st.builds(
        _apply,
        st.just(base),
        st.dictionaries(st.sampled_from([*fields, "extra"]), values, min_size=1, max_size=3),
        st.sets(st.sampled_from(fields), max_size=1),
    )


OTHER_ITEM = st.one_of(
    _mutations(dict(SAMPLE_ARTICLE, id="fuzzed")).map(json.dumps),
    _mutations(dict(SAMPLE_ARTICLE, id="fuzzed")).map(json.dumps),
    ARTICLE.map(json.dumps),
    JSON_VALUE.map(json.dumps),
    st.sampled_from(RAW_HOSTILE),
)
ids = itertools.count()


def _valid() -> tuple[str, str]:
    article_id = f"valid-article-{next(ids)}"
    item = dict(SAMPLE_ARTICLE, id=article_id, url=f"https://news.example.com/{article_id}")
    return article_id, json.dumps(item)


def _batch(valid: str, others: list[str], at: int) -> str:
    items = [*others]
    items.insert(at % (len(items) + 1), valid)
    return "[" + ", ".join(items) + "]"


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[tuple[TestClient, Service]]:
    """The real app on the test database, with signup limits out of the fuzzer's way (a
    429 would hide what is behind it) and few signup emails (the catcher writes each)."""
    service = Service.build(load_settings({**env, "DIGESTD_ADMIN_TOKEN": ADMIN_TOKEN}))
    policy = WebPolicy(signups_per_ip=10**9, emails_per_mailbox=10**9, signup_emails_per_hour=3)
    client = TestClient(create_app(service, policy), base_url="https://digest.example.com")
    with client:
        yield client, service
    service.engine.dispose()


def _no_server_error(answer: Any) -> None:
    assert answer.status_code < 500, answer.text[:500]
    assert "Traceback" not in answer.text


def _form_body(fields: list[tuple[str, str]]) -> bytes:
    # Percent-encoded as a browser would, lone surrogates as the bytes they would be.
    return "&".join(
        f"{quote(_surrogatepass(name))}={quote(_surrogatepass(value))}" for name, value in fields
    ).encode()


SIGNUP = {
    "email": "reader@example.com",
    "categories": ["ai"],
    "frequency": "daily",
    "timezone": "UTC",
    "source": "the fuzz test",
}
FORM_FIELDS = _mutations(SIGNUP, TEXT).map(
    lambda fields: [
        (name, item)
        for name, value in fields.items()
        for item in (value if isinstance(value, list) else [value])
    ]
) | st.lists(
    st.tuples(
        st.sampled_from(["email", "categories", "frequency", "timezone", "source", "website"])
        | TEXT,
        TEXT,
    ),
    max_size=8,
)


def test_fuzzed_signup_forms_never_fail_on_our_side(app: tuple[TestClient, Service]) -> None:
    client, service = app
    token = csrf_of(client.get("/subscribe").text)

    @settings(FUZZ, max_examples=500)
    @given(fields=FORM_FIELDS, with_token=st.booleans())
    def signup(fields: list[tuple[str, str]], with_token: bool) -> None:
        sent = [("csrf", token), *fields] if with_token else fields
        answer = client.post(
            "/subscribe",
            content=_form_body(sent),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        _no_server_error(answer)

    signup()
    _nobody_active_by_signup(service)


SIGNUP_JSON = st.one_of(
    _mutations(SIGNUP).map(json.dumps),
    st.fixed_dictionaries(
        {},
        optional={
            "email": _field(TEXT),
            "categories": _field(st.lists(st.sampled_from(sorted(CATEGORIES)) | TEXT, max_size=3)),
            "frequency": _field(st.sampled_from(["daily", "weekly", "both"])),
            "timezone": _field(st.sampled_from(["UTC", "Europe/Paris"]) | TEXT),
            "source": _field(TEXT),
        },
    ).map(json.dumps),
    JSON_VALUE.map(json.dumps),
    st.sampled_from(RAW_HOSTILE),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)


def test_fuzzed_signup_json_never_fails_on_our_side(app: tuple[TestClient, Service]) -> None:
    client, service = app

    @settings(FUZZ, max_examples=500)
    @given(body=SIGNUP_JSON)
    def signup(body: str) -> None:
        answer = client.post(
            "/subscribe",
            content=body.encode("utf-8", "surrogatepass"),
            headers={"Content-Type": "application/json"},
        )
        _no_server_error(answer)
        assert answer.status_code in (202, 400), answer.text[:300]

    signup()
    _nobody_active_by_signup(service)


def _nobody_active_by_signup(service: Service) -> None:
    """A signup alone never activates anyone: that takes the emailed link."""
    with service.sessions() as session:
        statuses = set(session.scalars(select(Subscriber.status)))
    assert statuses <= {SubscriberStatus.PENDING}


def _stored(service: Service, article_id: str) -> bool:
    with service.sessions() as session:
        return session.get(Article, article_id) is not None


@pytest.mark.slow  # 700 batches: ~10 s
def test_fuzzed_article_batches_keep_their_valid_item(app: tuple[TestClient, Service]) -> None:
    client, service = app

    @settings(FUZZ, max_examples=700)
    @given(others=st.lists(OTHER_ITEM, min_size=1, max_size=4), at=st.integers(0, 4))
    def post(others: list[str], at: int) -> None:
        article_id, valid = _valid()
        body = _batch(valid, others, at)
        answer = client.post(
            "/api/articles",
            content=body.encode("utf-8", "surrogatepass"),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        _no_server_error(answer)
        assert answer.status_code == 200, answer.text[:300]
        report = answer.json()
        # Items that share an id count once (the last copy wins); each rejection is listed.
        assert 1 <= report["added"] + report["updated"] + report["rejected"] <= len(others) + 1
        assert report["rejected"] == len(report["errors"])
        assert all(isinstance(e["position"], int) and e["field"] for e in report["errors"])
        assert _stored(service, article_id)

    post()


@pytest.mark.slow  # 350 runs of main(): ~10 s
def test_fuzzed_article_files_keep_their_valid_item(
    app: tuple[TestClient, Service],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """``digestd articles add FILE`` in-process (each example is one run of main())."""
    _, service = app
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "articles.json"

    @settings(FUZZ, max_examples=250)
    @given(
        others=st.lists(OTHER_ITEM, max_size=3),
        at=st.integers(0, 3),
        jsonl=st.booleans(),
        bom=st.booleans(),
    )
    def add(others: list[str], at: int, jsonl: bool, bom: bool) -> None:
        article_id, valid = _valid()
        # JSONL with the valid item first: a file that starts with "[" is one array
        text = "\n".join([valid, *others]) if jsonl else _batch(valid, others, at)
        path.write_bytes(b"\xef\xbb\xbf" * bom + text.encode("utf-8", "surrogatepass"))
        code = main(["articles", "add", str(path)])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        rejected = _rejected(out)
        assert code == (1 if rejected else 0), err
        assert len(err.splitlines()) == rejected  # one line per rejected item
        assert _stored(service, article_id), err

    add()

    @settings(FUZZ, max_examples=100)
    @given(content=st.binary(max_size=200) | st.text(ANY_CHAR, max_size=60).map(_surrogatepass))
    def anything(content: bytes) -> None:
        path.write_bytes(content)
        code = main(["articles", "add", str(path)])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        assert code in (0, 1, 2)
        if code == 2:
            assert len(err.strip().splitlines()) == 1 and out == ""

    anything()


def _surrogatepass(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _rejected(summary: str) -> int:
    """The rejected count of ``articles: A added, U updated, R rejected``."""
    return int(summary.strip().rsplit(" ", 2)[-2])
