"""Reading digestd's structured log lines back in tests: logfmt and JSON."""

from __future__ import annotations

import json
import shlex
from typing import Any


def logfmt(line: str) -> dict[str, str]:
    """``key=value key="quoted value"`` as a dict (values as written, unquoted)."""
    return dict(part.split("=", 1) for part in shlex.split(line))


def events(text: str, event: str, fmt: str = "logfmt") -> list[dict[str, Any]]:
    """Every line of ``text`` for ``event``, parsed."""
    lines = [line for line in text.splitlines() if line.strip()]
    parsed: list[dict[str, Any]] = [
        json.loads(line) if fmt == "json" else logfmt(line) for line in lines
    ]
    return [fields for fields in parsed if fields.get("event") == event]
