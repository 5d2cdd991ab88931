"""JSON as digestd reads it: an object that names a key twice is refused.

``json`` keeps the last of two equal keys, and other parsers keep the first, so a body like
``{"categories": ["ai"], "categories": ["robotics"]}`` means different things to a proxy
that checked it and to digestd. Refusing it leaves one reading.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKey(ValueError):
    """An object names ``key`` twice (a ``ValueError``, not a syntax error: the text is
    well-formed, so a reader of several items can go on after it)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} appears twice in one object")
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return result


DECODER = json.JSONDecoder(object_pairs_hook=_object)


def loads(text: str | bytes) -> Any:
    """Like :func:`json.loads`; raises :class:`DuplicateKey` for a key named twice."""
    return json.loads(text, object_pairs_hook=_object)
