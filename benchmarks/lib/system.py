"""What the scripts ask the operating system: memory and CPU time of processes, a free port."""

from __future__ import annotations

import os
import resource
import socket
import threading


def peak_rss_mb() -> float:
    """This process's peak resident set (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_bytes(pid: int | str = "self") -> int:
    """A process's resident set now."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    """User + system time of this process, all its threads: less sensitive to a busy machine than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TreeMonitor(threading.Thread):
    """Samples CPU time and RSS of this process and all its descendants (worker processes are
    invisible to getrusage until they end) twice a second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.cpu: dict[int, float] = {}
        self.peak_rss = 0
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.done.wait(0.5):
            rss = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    times = process.cpu_times()
                    self.cpu[process.pid] = times.user + times.system
                    rss += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, rss)
