"""Who claimed a queue row: this process, named so that a successor can tell it is dead.

A claim stores ``host/boot/pid/start`` (the kernel's boot id and the process's start time
in clock ticks since boot, from ``/proc``). When a daemon restarts after a kill -9, the
rows its predecessor had claimed are still leased; a worker on the same host that finds
that process gone (or its pid now someone else's: another start time) takes them over at
once instead of waiting out the lease. Workers on other hosts, or without ``/proc``, wait
for the lease as before.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None when it does not exist."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its ")".
    return stat.rpartition(")")[2].split()[19]


@dataclass(frozen=True)
class Worker:
    host: str
    boot: str
    pid: int
    start: str

    @classmethod
    def this_process(cls) -> Worker:
        pid = os.getpid()
        return cls(socket.gethostname()[:64], _boot_id(), pid, _start_ticks(pid) or "")

    @property
    def label(self) -> str:
        return f"{self.host}/{self.boot}/{self.pid}/{self.start}"

    def outlived(self, label: str) -> bool:
        """True when ``label`` names a worker of this host that is gone: a process that no
        longer runs (or whose pid another process has taken), or one from before a reboot."""
        host, boot, pid, start = [*label.split("/"), "", "", ""][:4]
        if not self.boot or host != self.host or label == self.label:
            return False
        if boot != self.boot:
            return bool(boot)  # this host has rebooted since that claim
        if not (pid.isascii() and pid.isdigit()):
            return False
        return _start_ticks(int(pid)) != start
