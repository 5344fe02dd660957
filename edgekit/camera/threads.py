"""How the camera loop sets threads while it runs: the runners' (ONNX Runtime without spinning, sized to the idle
cores), OpenCV's pool and Python's GIL switch interval, and what the report says about them."""
from __future__ import annotations

import contextlib
import sys
from typing import Any

from edgekit.lazy import lazy_import
from edgekit.platform import idle_cores

cv2 = lazy_import("cv2")


def runner_threads(backend: str, threads: int) -> dict[str, Any]:
    """The runner's thread options in the loop. ONNX Runtime's default (an intra-op thread per core, spinning
    between ops) loses the most when other work shares the cores: a descheduled thread stalls every parallel op
    and the spinning ones burn the time slices the others need. So its threads never spin here, and --threads 0
    means the cores not already busy when the loop starts (platform.idle_cores, at least 1)."""
    if backend != "onnxrt":
        return {"threads": threads} if threads else {}
    return {"threads": threads or idle_cores(), "spin": False}


def threads_used(det, cls, overlap: bool) -> dict[str, Any]:
    """What the report says about threads: each runner's own (as resolved), OpenCV's, whether stages overlap."""
    out: dict[str, Any] = {"overlap": overlap, "opencv": 1, "gil_switch_ms": GIL_SWITCH_SECONDS * 1e3}
    for name, r in (("detector", det), ("classifier", cls)):
        if r is not None:
            out[name] = {k: r.options[k] for k in ("threads", "spin") if k in r.options} or "runtime default"
    return out


GIL_SWITCH_SECONDS = 0.0005  # Python's default is 0.005


@contextlib.contextmanager
def loop_threads(opencv: int = 1, gil_switch: float = GIL_SWITCH_SECONDS):
    """While the loop runs (restored after): OpenCV's own pool at `opencv` threads, whose workers would compete
    with the runtime's for the same cores on a letterbox or a crop that one thread does in a millisecond; and
    a shorter GIL switch interval: a stage thread coming back from C code (a decode, a runner, a frame copy)
    waits for the GIL up to the interval while another thread runs Python (the live view's encoder drawing,
    its request threads), and at Python's 5 ms that wait showed up in the loop's frame times (10-40 ms writes)."""
    before = cv2.getNumThreads(), sys.getswitchinterval()
    cv2.setNumThreads(opencv)
    sys.setswitchinterval(gil_switch)
    try:
        yield
    finally:
        cv2.setNumThreads(before[0])
        sys.setswitchinterval(before[1])
