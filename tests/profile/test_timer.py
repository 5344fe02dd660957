"""Timer samples: a fixed-size ring (memory set when a stage first appears), the most recent kept, in order."""
from __future__ import annotations

import numpy as np

from edgekit.profile import timer as timer_mod
from edgekit.profile.timer import LatencyStats, Samples, Timer


def test_samples_keep_the_most_recent_in_order():
    s = Samples(4)
    assert len(s) == 0 and not s and list(s) == []
    for v in range(1, 4):
        s.append(v)
    assert list(s) == [1, 2, 3] and s[-1] == 3 and s[0] == 1
    for v in range(4, 11):
        s.append(v)
    assert len(s) == 4 and list(s) == [7, 8, 9, 10] and s[-1] == 10 and s[0] == 7 and s[-4] == 7
    assert LatencyStats.from_ns(s).n == 4 and LatencyStats.from_ns(s).max_ms == 10 / 1e6
    s.clear()
    assert len(s) == 0 and list(s) == []


def test_timer_stages_are_bounded_and_their_memory_is_fixed_up_front(monkeypatch):
    monkeypatch.setattr(timer_mod, "MAX_SAMPLES", 16)
    t = Timer()
    for i in range(1000):
        t.add("detect", i)
    q = t.samples["detect"]
    assert len(q) == 16 and list(q) == list(range(984, 1000)) and q.capacity == 16
    assert t.stats()["detect"].n == 16 and np.isclose(t.stats()["detect"].p50_ms, 991.5 / 1e6)
