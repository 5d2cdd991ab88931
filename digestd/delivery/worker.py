"""Who claimed a queue row: this process, named so that a successor can tell it is dead.

A claim stores ``host/boot/pidns/pid/start``: the host name, the kernel's boot id, the
process's PID namespace, its pid and its start time in clock ticks since boot (from
``/proc``). When a daemon restarts after a kill -9, the rows its predecessor had claimed
are still leased; a worker that can *prove* that process gone takes them over at once
instead of waiting out the lease. Proof needs all of the label to be about the place this
worker runs (the same host name, boot and PID namespace: a pid means nothing in another
namespace, and two machines or containers can share a host name) and then the pid to be
free, or held by a process started at another time. Anything less (another host, another
boot, another namespace, a pid that exists but cannot be read, no ``/proc``) waits for
the lease: taking a live worker's claims would send its messages twice, over and over.
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


def _pid_namespace() -> str:
    """This process's PID namespace, as its inode number (``pid:[4026531836]``)."""
    try:
        link = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return ""
    return "".join(c for c in link if c.isascii() and c.isdigit())


def _start_ticks(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None when it cannot be read."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its ")".
    return stat.rpartition(")")[2].split()[19]


def _gone(pid: int, start: str) -> bool:
    """The process ``pid`` that started at ``start`` no longer runs. Asked of the kernel
    (signal 0), not of ``/proc`` alone: with ``hidepid`` another user's live process has
    no ``/proc`` entry, and reading its absence as death would steal its claims."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, another user's: its start time may still show pid reuse
    except OSError:
        return False
    ticks = _start_ticks(pid)
    return ticks is not None and ticks != start  # the pid now someone else's


@dataclass(frozen=True)
class Worker:
    host: str
    boot: str
    pid: int
    start: str
    namespace: str = ""  # the PID namespace; "" where it cannot be read

    @classmethod
    def this_process(cls) -> Worker:
        pid = os.getpid()
        start = _start_ticks(pid) or ""
        return cls(socket.gethostname()[:64], _boot_id(), pid, start, _pid_namespace())

    @property
    def label(self) -> str:
        return f"{self.host}/{self.boot}/{self.namespace}/{self.pid}/{self.start}"

    def outlived(self, label: str) -> bool:
        """True when ``label`` names a worker proven gone (see the module docstring)."""
        fields = label.split("/")
        if len(fields) != 5 or label == self.label:
            return False  # a label of another form (an older digestd's): its lease decides
        host, boot, namespace, pid, start = fields
        if not (self.boot and self.namespace) or (host, boot, namespace) != (
            self.host,
            self.boot,
            self.namespace,
        ):
            return False
        if not (pid.isascii() and pid.isdigit() and start):
            return False
        return _gone(int(pid), start)
