"""What every helper process (enqueue, render) does first: leave its lifetime to the sender.

- Ctrl-C reaches the whole process group and systemd signals the whole cgroup; stopping is
  the sending process's decision (it releases its batch, then ends its helpers), not a
  traceback here or a dead helper it would take for a crash. So SIGINT and SIGTERM are
  ignored; the sender ends a helper with SIGKILL.
- If the sender itself is killed (kill -9, the OOM killer) nobody would end the helper: a
  pool worker holds both ends of its task queue and would wait on it forever. A watchdog
  thread notices the parent is gone (the helper was re-parented) and exits.
"""

from __future__ import annotations

import os
import signal
import threading

WATCH_SECONDS = 1.0


def leave_stopping_to_the_sender() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    threading.Thread(
        target=_exit_with, args=(parent,), name="exit-with-sender", daemon=True
    ).start()


def _exit_with(parent: int) -> None:
    stop = threading.Event()  # never set: wait() is a sleep that cannot be interrupted
    while not stop.wait(WATCH_SECONDS):
        if os.getppid() != parent:
            os._exit(0)  # nothing to clean up: the sender's database work is transactional
