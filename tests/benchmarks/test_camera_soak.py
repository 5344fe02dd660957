"""The soak benchmark's arithmetic on crafted RSS samples (the benchmark itself runs 30,000 frames: not here)."""
from __future__ import annotations

import pytest
from repo_files import load_script

soak = load_script("benchmarks", "camera_soak")


def test_growth_is_measured_from_the_first_sample_after_warm_up():
    # (frames, seconds, RSS MiB): climbs during warm-up, then 1 MiB per 1,000 frames
    samples = [[500, 1, 150.0], [1000, 2, 200.0], [2000, 4, 201.0], [3000, 6, 202.0]]
    g = soak.growth(samples, 1000)
    assert g["rss_at_warmup_mb"] == 200.0 and g["rss_end_mb"] == 202.0 and g["growth_mb"] == 2.0
    assert g["warmup_frame"] == 1000 and g["end_frame"] == 3000 and g["max_after_warmup_mb"] == 202.0
    assert g["slope_kb_per_frame"] == pytest.approx(1.024)  # 1 MiB / 1,000 frames


def test_growth_needs_two_samples_after_warm_up():
    with pytest.raises(ValueError, match="two RSS samples"):
        soak.growth([[500, 1, 1.0], [1000, 2, 1.0]], 1000)
