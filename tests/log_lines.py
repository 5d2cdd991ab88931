"""Reading digestd's structured log lines back in tests: logfmt and JSON."""

from __future__ import annotations

import json
import shlex
from typing import Any


def logfmt(line: str) -> dict[str, str]:
    """``key=value key="quoted value"`` as a dict (values as written, unquoted)."""
    return dict(part.split("=", 1) for part in shlex.split(line) if "=" in part)


def events(text: str, event: str, fmt: str = "logfmt") -> list[dict[str, Any]]:
    """Every line of ``text`` for ``event``, parsed; lines that are not log lines (what a
    library printed itself) are passed over."""
    found = []
    for line in text.splitlines():
        try:
            fields: dict[str, Any] = json.loads(line) if fmt == "json" else logfmt(line)
        except ValueError:
            continue
        if isinstance(fields, dict) and fields.get("event") == event:
            found.append(fields)
    return found
