"""Page cursors: signed like every other token, so they survive a key rotation and cannot be
edited; each list reads only the shape of cursor it hands out."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from starlette.requests import Request

from digestd.tokens import Tokens
from digestd.web.errors import WebError
from digestd.web.params import Cursors

OLD, NEW = "old-key-0123456789abcdef01234567", "new-key-0123456789abcdef01234567"


def _request(cursor: str) -> Request:
    query = urlencode({"cursor": cursor}).encode()
    return Request({"type": "http", "method": "GET", "query_string": query, "headers": []})


def test_a_cursor_handed_out_before_a_key_rotation_still_reads() -> None:
    cursor = Cursors(Tokens([OLD])).dump("subscribers", [42])
    assert Cursors(Tokens([NEW, OLD])).load_id(_request(cursor), "subscribers") == 42
    with pytest.raises(WebError) as refused:
        Cursors(Tokens([NEW])).load_id(_request(cursor), "subscribers")
    assert refused.value.status == 400 and refused.value.field == "cursor"


def test_an_edited_cursor_is_refused() -> None:
    cursor = Cursors(Tokens([NEW])).dump("subscribers", [42])
    payload, _, signature = cursor.partition(".")
    edited = payload.replace(payload[2], "A" if payload[2] != "A" else "B") + "." + signature
    with pytest.raises(WebError):
        Cursors(Tokens([NEW])).load_id(_request(edited), "subscribers")


def test_each_list_reads_only_its_own_shape_of_cursor() -> None:
    cursors = Cursors(Tokens([NEW]))
    moment = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    timed = cursors.dump("suppressions", [moment.isoformat(), "abc"])
    assert cursors.load_timed(_request(timed), "suppressions") == (moment, "abc")
    by_id = cursors.dump("suppressions", [7])
    for wrong, read in ((by_id, cursors.load_timed), (timed, cursors.load_id)):
        with pytest.raises(WebError) as refused:
            read(_request(wrong), "suppressions")
        assert refused.value.field == "cursor"
