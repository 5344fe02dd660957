"""Memory as the OS sees it: resident set size now and at its peak, and on Jetson the GPU's share of the
unified memory (NvMap). Read from /proc; no extra packages."""
from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * _PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB. Linux: VmHWM, which starts afresh at exec
    (ru_maxrss does not: a child forked from a big parent inherits the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10


def nvmap_mb() -> float | None:
    """Jetson: memory the GPU holds through NvMap (/proc/meminfo NvMapMemUsed), MiB; None elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("NvMapMemUsed:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None
