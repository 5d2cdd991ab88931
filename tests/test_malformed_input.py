"""Hostile article batches and arguments, black-box: ``POST /api/articles`` over HTTP and
``digestd`` as its own process. Each bad item is one error naming its position and field,
the valid items of the batch are stored, nothing else is, and no traceback shows anywhere.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from digestd.models import Article, Delivery, Edition, Subscriber
from tests.admin_seed import AUTH
from tests.conftest import WebRig
from tests.helpers import SAMPLE_ARTICLE, one_line_error, run_cli, run_digestd

GOOD = [dict(SAMPLE_ARTICLE, id="good-1"), dict(SAMPLE_ARTICLE, id="good-2")]
JSON = {**AUTH, "Content-Type": "application/json"}


def _item(**raw: str) -> str:
    """The sample article as JSON text with some fields replaced by raw JSON text."""
    fields = {key: json.dumps(value) for key, value in SAMPLE_ARTICLE.items()}
    fields.update({"id": '"hostile"', **raw})
    return "{" + ", ".join(f"{json.dumps(key)}: {value}" for key, value in fields.items()) + "}"


DEEP = "[" * 5000 + "]" * 5000
# (raw JSON text of one item, the field its error names, words of the problem)
HOSTILE: list[Any] = [
    pytest.param(_item(analysis=DEEP), "item", "nested too deeply", id="deep-field"),
    pytest.param("[" * 100_000 + "]" * 100_000, "item", "nested too deeply", id="deep-item"),
    pytest.param('{"a":' * 5000 + "1" + "}" * 5000, "item", "nested too deeply", id="deep-obj"),
    pytest.param(_item(title=r'"\ud800"'), "title", "surrogate", id="surrogate-title"),
    pytest.param(_item(id=r'"x\udfff"'), "id", "surrogate", id="surrogate-id"),
    pytest.param(_item(url=r'"https://a.example.com/\udc00"'), "url", "surrogate", id="sg-url"),
    pytest.param(
        _item(key_takeaways=r'["ok", "\ud83d"]'), "key_takeaways", "surrogate", id="sg-kt"
    ),
    pytest.param(
        _item(companies=r'[{"name": "\udbff"}]'), "companies[0].name", "surrogate", id="sg-co"
    ),
    pytest.param(_item(categories=r'["\ud800"]'), "categories", "unknown", id="surrogate-cat"),
    pytest.param(_item(score="1e400"), "score", "from 0 to", id="score-1e400"),
    pytest.param(_item(score="1" + "0" * 400), "score", "too large", id="score-10^400"),
    pytest.param(_item(score="-1" + "0" * 400), "score", "from 0 to", id="score-minus-10^400"),
    pytest.param(_item(score="9" * 5000), "item", "cannot be read", id="score-5000-digits"),
    pytest.param(_item(score="NaN"), "score", "from 0 to", id="score-nan"),
    pytest.param(_item(score="Infinity"), "score", "from 0 to", id="score-infinity"),
    pytest.param(
        _item(published_at='"0001-01-01T00:00:00+05:00"'), "published_at", "years", id="year-1"
    ),
    pytest.param(_item(published_at='"0001-01-01T00:00:00Z"'), "published_at", "years", id="y1z"),
    pytest.param(
        _item(published_at='"9999-12-31T23:59:59-05:00"'), "published_at", "years", id="year-9999"
    ),
    pytest.param(_item(published_at='"9999-12-31T23:59:59Z"'), "published_at", "years", id="y9z"),
    pytest.param(_item(title=r'"a\u0000b"'), "title", "NUL", id="nul-title"),
    pytest.param(_item(id=r'"nul\u0000id"'), "id", "NUL", id="nul-id"),
    pytest.param(_item(source=r'"\u0000"'), "source", "NUL", id="nul-source"),
    pytest.param(_item(why_it_matters=r'"x\u0000"'), "why_it_matters", "NUL", id="nul-why"),
    pytest.param(_item(key_takeaways=r'["\u0000"]'), "key_takeaways", "NUL", id="nul-kt"),
    pytest.param(
        _item(companies=r'[{"name": "A", "ticker": "\u0000"}]'),
        "companies[0].ticker",
        "NUL",
        id="nul-ticker",
    ),
    pytest.param(
        _item(image_url=r'"https://a.example.com/\u0000.png"'), "image_url", "NUL", id="ni"
    ),
    # No email can carry these (XML 1.0 cannot hold them): one would fail every digest of
    # the article's categories.
    pytest.param(_item(title=r'"a\u0001b"'), "title", "U+0001", id="soh-title"),
    pytest.param(_item(source=r'"S\u001b[31m"'), "source", "U+001B", id="esc-source"),
    pytest.param(_item(why_it_matters=r'"x\uffff"'), "why_it_matters", "U+FFFF", id="ffff"),
    pytest.param(_item(key_takeaways=r'["ok", "\u0007"]'), "key_takeaways", "U+0007", id="bel"),
    pytest.param(_item(analysis=r'"\u000b"'), "analysis", "U+000B", id="vt-analysis"),
    # An id is a path segment of /api/articles/{id}/hold: a line break could never be routed.
    pytest.param(_item(id=r'"a\r\nb"'), "id", "line breaks", id="crlf-id"),
    pytest.param(_item(id=r'"a\tb"'), "id", "tabs", id="tab-id"),
    pytest.param(_item(id=r'"a\u001bb"'), "id", "U+001B", id="esc-id"),
    # A key named twice means one thing to a parser that keeps the first and another to one
    # that keeps the last: neither reading is taken.
    pytest.param(_item()[:-1] + ', "title": "again"}', "item", "'title' twice", id="twice"),
    pytest.param(
        _item(companies='[{"name": "A", "name": "B"}]'), "item", "'name' twice", id="twice-in"
    ),
]


def _batch(hostile: str) -> str:
    return f"[{json.dumps(GOOD[0])}, {hostile}, {json.dumps(GOOD[1])}]"


def _stored(web: WebRig) -> set[str]:
    with web.service.sessions() as session:
        return set(session.scalars(select(Article.id)))


@pytest.mark.parametrize(("hostile", "field", "words"), HOSTILE)
def test_api_keeps_the_valid_items_around_a_hostile_one(
    web: WebRig, hostile: str, field: str, words: str
) -> None:
    answer = web.client.post("/api/articles", content=_batch(hostile).encode(), headers=JSON)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["added"], body["rejected"]) == (2, 1)
    [error] = body["errors"]
    assert (error["position"], error["field"]) == (2, field)
    assert words in error["problem"]
    assert "Traceback" not in answer.text
    assert _stored(web) == {"good-1", "good-2"}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        pytest.param(b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), 200, "", id="bom-array"),
        pytest.param(DEEP.encode(), 422, "nested too deeply", id="deep-array"),
        pytest.param(b'{"a": ' + DEEP.encode() + b"}", 422, "nested too deeply", id="deep-object"),
        pytest.param(b"\xff\xfe[]", 400, "not UTF-8", id="not-utf8"),
        pytest.param(b"[\xed\xa0\x80]", 400, "not UTF-8", id="encoded-surrogate"),
        pytest.param(json.dumps(GOOD).encode() + b" x", 400, "Extra data", id="trailing"),
        pytest.param(b"[" + json.dumps(GOOD[0]).encode(), 400, "not valid JSON", id="truncated"),
        pytest.param(b"[]", 400, "at least one article", id="empty-array"),
    ],
)
def test_api_whole_bodies(web: WebRig, body: bytes, status: int, words: str) -> None:
    answer = web.client.post("/api/articles", content=body, headers=JSON)
    assert answer.status_code == status, answer.text
    assert words in answer.text and "Traceback" not in answer.text
    assert _stored(web) == ({"good-1", "good-2"} if status == 200 else set())


def test_other_api_bodies_and_parameters_are_4xx_too(web: WebRig) -> None:
    deep = b'{"kind": "daily", "emails": ' + DEEP.encode() + b"}"
    answer = web.client.post("/api/editions/trigger", content=deep, headers=JSON)
    assert answer.status_code == 400 and "nested too deeply" in answer.json()["error"]
    for now in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59Z"):
        answer = web.client.get(
            "/api/editions/preview",
            params={"kind": "daily", "categories": "ai", "now": now},
            headers=AUTH,
        )
        assert answer.status_code == 400 and answer.json()["field"] == "now"
    assert web.count(Edition) == 0


def test_a_json_body_naming_a_field_twice_is_refused_and_changes_nothing(web: WebRig) -> None:
    trigger = b'{"kind": "weekly", "all": true, "kind": "daily"}'
    answer = web.client.post("/api/editions/trigger", content=trigger, headers=JSON)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == "kind" and "twice" in answer.json()["error"]
    signup = (
        b'{"email": "first@example.com", "categories": ["ai"], "frequency": "daily",'
        b' "email": "second@example.com"}'
    )
    answer = web.client.post(
        "/subscribe", content=signup, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == "email" and "Traceback" not in answer.text
    assert (web.count(Edition), web.count(Delivery), web.count(Subscriber)) == (0, 0, 0)


# --- the command line, as its own process ---------------------------------------------


def test_cli_keeps_the_valid_items_of_an_array_and_of_jsonl(
    env: dict[str, str], tmp_path: Path, web: WebRig
) -> None:
    """Every hostile item above in one array, then in one JSONL file: one error line each."""
    hostile = [p.values[0] for p in HOSTILE]
    array = tmp_path / "batch.json"
    array.write_text(f"[{json.dumps(GOOD[0])}, {', '.join(hostile)}, {json.dumps(GOOD[1])}]")
    lines = tmp_path / "batch.jsonl"
    lines.write_text("\n".join([json.dumps(GOOD[0]), *hostile, json.dumps(GOOD[1])]) + "\n")
    for path, summary in ((array, "2 added, 0 updated"), (lines, "0 added, 2 updated")):
        result = run_digestd(env, "articles", "add", str(path), cwd=tmp_path)
        err = result.stderr.decode()
        assert result.returncode == 1 and "Traceback" not in err, err
        rejected = err.strip().splitlines()
        assert len(rejected) == len(HOSTILE)
        for number, (line, case) in enumerate(zip(rejected, HOSTILE, strict=True), start=2):
            field = case.values[1]
            if path is lines and field == "item":
                field = "line"  # JSONL names what it could not read by its line
            assert line.startswith(f"rejected item {number}: {field}: "), line
        assert f"articles: {summary}, {len(HOSTILE)} rejected" in result.stdout.decode()
        assert _stored(web) == {"good-1", "good-2"}


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        pytest.param(b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), 0, "", id="bom-array"),
        pytest.param('[{"id": "café"}]'.encode("latin-1"), 2, "not UTF-8", id="latin-1"),
        pytest.param(b"", 2, "empty", id="empty"),
        pytest.param(b'[{"id": "a", ', 2, "malformed JSON at line 1", id="truncated"),
        pytest.param(DEEP.encode(), 1, "nested too deeply", id="deep"),
    ],
)
def test_cli_whole_files(
    env: dict[str, str], tmp_path: Path, web: WebRig, content: bytes, code: int, words: str
) -> None:
    path = tmp_path / "articles.json"
    path.write_bytes(content)
    sources = [(str(path), b"")]
    if code != 1:
        sources.append(("-", content))  # the same bytes on stdin
    for source, stdin in sources:
        result = run_digestd(env, "articles", "add", source, stdin=stdin, cwd=tmp_path)
        if code == 0:
            assert result.returncode == 0 and result.stderr == b"", result.stderr
        else:
            assert words in one_line_error(result, code)
    assert _stored(web) == ({"good-1", "good-2"} if code == 0 else set())


BAD_NOW = [
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59Z",
    "2026-02-30T07:00:00Z",
    "2026-11-30",
    "",
    "\udcff",  # a byte that is not UTF-8, as a shell passes it
]
COMMANDS = [["tick"], ["preview", "daily", "--categories", "ai"]]


@pytest.mark.parametrize("now", BAD_NOW)
@pytest.mark.parametrize("command", COMMANDS)
def test_cli_refuses_an_odd_now_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    web: WebRig,
    command: list[str],
    now: str,
) -> None:
    assert run_cli(monkeypatch, env, *command, "--now", now) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("digestd: --now: ")
    assert web.count(Edition) == web.count(Delivery) == 0
    assert not (Path(env["DIGESTD_DATA_DIR"]) / "mail").exists()


@pytest.mark.parametrize("now", ["0001-01-01T00:00:00+05:00", "\udcff"])
@pytest.mark.parametrize("command", COMMANDS)
def test_the_real_command_refuses_an_odd_now_in_one_line(
    env: dict[str, str], tmp_path: Path, web: WebRig, command: list[str], now: str
) -> None:
    result = run_digestd(env, *command, "--now", now, cwd=tmp_path)
    assert one_line_error(result).startswith("digestd: --now: ")
    assert web.count(Edition) == web.count(Delivery) == 0


def _preview_to(
    output: str, env: dict[str, str], tmp_path: Path, web: WebRig
) -> subprocess.CompletedProcess[bytes]:
    """``digestd preview daily -o OUTPUT`` of an edition with one story."""
    published = {**GOOD[0], "published_at": "2026-11-30T05:00:00Z"}
    web.client.post("/api/articles", json=[published], headers=AUTH)
    return run_digestd(
        env,
        *["preview", "daily", "--categories", "ai", "--now", "2026-11-30T07:00:00Z"],
        *["-o", output],
        cwd=tmp_path,
    )


@pytest.mark.parametrize("target", ["missing/dir/x.html", "."])
def test_preview_to_a_path_that_cannot_be_written_is_one_line(
    env: dict[str, str], tmp_path: Path, web: WebRig, target: str
) -> None:
    result = _preview_to(str(tmp_path / target), env, tmp_path, web)
    assert one_line_error(result).startswith(f"digestd: -o: cannot write {tmp_path / target}")
    assert not (tmp_path / "missing").exists()


def test_preview_to_a_full_disk_is_a_runtime_failure(
    env: dict[str, str], tmp_path: Path, web: WebRig
) -> None:
    """The path was fine; the device failed: exit 1 (a failure), not 2 (bad usage)."""
    result = _preview_to("/dev/full", env, tmp_path, web)
    assert one_line_error(result, code=1) == "digestd: No space left on device: /dev/full"


def test_a_batch_of_thousands_of_bad_items_answers_with_the_first_hundred(web: WebRig) -> None:
    """Every bad item is counted, the good one kept; the answer lists the first 100 errors,
    not a million (100 MB)."""
    body = "[" + ",".join(["{}"] * 5000 + [json.dumps(GOOD[0])]) + "]"
    answer = web.client.post("/api/articles", content=body.encode(), headers=JSON)
    assert answer.status_code == 200, answer.text[:300]
    report = answer.json()
    assert (report["added"], report["rejected"]) == (1, 5000)
    assert [e["position"] for e in report["errors"]] == list(range(1, 101))
    assert len(answer.content) < 20_000
    assert _stored(web) == {"good-1"}
