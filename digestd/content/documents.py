"""Article documents read item by item: one JSON object, a JSON array, or JSONL.

The items of an array are decoded one at a time, so an item the decoder cannot hold (nested
thousands deep, an integer of thousands of digits) is that item's error and the others
still count. Only a document whose syntax breaks (where the next item would start is then
unknown) is one :class:`InputError` for the whole of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from digestd import strict_json
from digestd.errors import InputError

_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, nothing else
# A string (escapes and all) or a bracket: enough to find where an undecodable value ends.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_SCALAR = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[-+.0-9eE]+|true|false|null')


@dataclass(frozen=True)
class Undecodable:
    """An item, or a JSONL line, that is not JSON this reader can take."""

    field: str  # "item" or "line"
    problem: str


Items = Iterator[tuple[int, Any]]


def decode_body(text: str) -> list[tuple[int, Any]]:
    """An HTTP body: one object or an array of them, (1-based position, item)."""
    text = text.removeprefix("\ufeff")
    start = _skip(text, 0)
    if text.startswith("[", start):
        return list(_array(text, start))
    try:
        return [(1, strict_json.loads(text))]
    except json.JSONDecodeError as exc:
        raise _malformed(exc) from exc
    except (RecursionError, ValueError) as exc:
        return [(1, _undecodable("item", exc))]


def decode_document(text: str) -> Items:
    """A file: a JSON object, a JSON array, or JSONL (a position is then the line number)."""
    text = text.removeprefix("\ufeff")  # a BOM an editor left is not part of the JSON
    start = _skip(text, 0)
    if start == len(text):
        raise InputError("no articles: the input is empty")
    if text.startswith("[", start):
        yield from _array(text, start)
        return
    try:
        single = strict_json.loads(text)
    except json.JSONDecodeError:
        pass  # not one JSON value: JSON lines
    except (RecursionError, ValueError) as exc:
        if _one_value(text, start):
            yield 1, _undecodable("item", exc)
            return
    else:
        yield 1, single
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, _line(line)


def _line(line: str) -> Any:
    try:
        return strict_json.loads(line)
    except json.JSONDecodeError as exc:
        return Undecodable("line", f"malformed JSON at column {exc.colno}: {exc.msg}")
    except (RecursionError, ValueError) as exc:
        return _undecodable("line", exc)


def _undecodable(field: str, exc: Exception) -> Undecodable:
    if isinstance(exc, RecursionError):
        return Undecodable(field, "is nested too deeply")
    if isinstance(exc, strict_json.DuplicateKey):
        return Undecodable(field, f"names the key {exc.key!r} twice")
    return Undecodable(field, f"cannot be read: {str(exc).splitlines()[0][:120]}")


def _array(text: str, start: int) -> Items:
    at = _skip(text, start + 1)
    if text.startswith("]", at):
        _end(text, at + 1)
        return
    position = 0
    while True:
        position += 1
        try:
            item, at = strict_json.DECODER.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            raise _malformed(exc) from exc
        except (RecursionError, ValueError) as exc:
            item, at = _undecodable("item", exc), _value_end(text, at)
        yield position, item
        at = _skip(text, at)
        if text.startswith(",", at):
            at = _skip(text, at + 1)
        elif text.startswith("]", at):
            _end(text, at + 1)
            return
        else:
            raise _malformed(json.JSONDecodeError("Expecting ',' delimiter", text, at))


def _skip(text: str, at: int) -> int:
    space = _SPACE.match(text, at)
    return space.end() if space else at


def _end(text: str, at: int) -> None:
    """Nothing but whitespace may follow the array."""
    rest = _skip(text, at)
    if rest != len(text):
        raise _malformed(json.JSONDecodeError("Extra data", text, rest))


def _one_value(text: str, start: int) -> bool:
    """Whether ``text`` holds one value (else it is taken as JSON lines)."""
    try:
        return _skip(text, _value_end(text, start)) == len(text)
    except InputError:
        return False


def _value_end(text: str, at: int) -> int:
    """Where the value starting at ``at`` ends, found by brackets and strings only (it
    could not be decoded, but its syntax may still be fine)."""
    if not text.startswith(("[", "{"), at):
        scalar = _SCALAR.match(text, at)
        if scalar is None:
            raise _malformed(json.JSONDecodeError("Expecting value", text, at))
        return scalar.end()
    depth = 0
    for token in _TOKEN.finditer(text, at):
        mark = token.group()
        if mark in ("[", "{"):
            depth += 1
        elif mark in ("]", "}"):
            depth -= 1
            if depth == 0:
                return token.end()
    raise _malformed(json.JSONDecodeError("Unterminated array or object", text, len(text)))


def _malformed(exc: json.JSONDecodeError) -> InputError:
    return InputError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
