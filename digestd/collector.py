"""How often digestd's processes collect garbage: less often than Python's default.

Planning and sending make a few container objects per reader and per message, nearly all
freed by reference counting at once. Python's default (a collection after every 700 net
allocations, and every 10th and 100th of those over older objects too) was ~7 % of the
sending process's CPU and ~7 % of the planner's, and found next to nothing
(bench/README.md, delivery round 7).
"""

from __future__ import annotations

import gc

COLLECT_EVERY = (20_000, 20, 20)


def collect_less_often() -> None:
    gc.set_threshold(*COLLECT_EVERY)
