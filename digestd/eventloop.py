"""The event loop the long-running commands (``run``, ``tick``) use: uvloop where it is
installed, asyncio's own otherwise.

uvloop takes about a fifth off the sender's CPU per message (bench/README.md, "Event
loop"): the send path is many small socket writes and callbacks, which is what it is
built for. ``DIGESTD_EVENT_LOOP=asyncio`` keeps the standard loop, to rule it out when
chasing a problem.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from digestd.errors import ConfigError

T = TypeVar("T")


def chosen() -> str:
    """The loop DIGESTD_EVENT_LOOP asks for; commands check it before they change anything."""
    choice = os.environ.get("DIGESTD_EVENT_LOOP", "uvloop").strip().lower()
    if choice not in ("uvloop", "asyncio"):
        raise ConfigError("DIGESTD_EVENT_LOOP", f"{choice!r} is not uvloop or asyncio")
    return choice


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop, as ``asyncio.run`` does."""
    try:
        choice = chosen()
    except ConfigError:
        main.close()  # closed unawaited, so Python has nothing to warn about
        raise
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:  # a platform without it (uvloop has no Windows build)
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
