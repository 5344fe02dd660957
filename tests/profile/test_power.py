"""Jetson rail power from crafted sysfs trees (the layouts of JetPack 6's hwmon and JetPack 4-5's iio) and
tegrastats lines: the numbers read must be the ones written."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgekit.profile import power


def _hwmon(root: Path, rails: dict[str, tuple[int, int]], name: str = "ina3221", idx: int = 1) -> None:
    dev = root / "class" / "hwmon" / f"hwmon{idx}"
    dev.mkdir(parents=True)
    (dev / "name").write_text(name + "\n")
    for n, (label, (mv, ma)) in enumerate(rails.items(), start=1):
        (dev / f"in{n}_label").write_text(label + "\n")
        (dev / f"in{n}_input").write_text(f"{mv}\n")
        (dev / f"curr{n}_input").write_text(f"{ma}\n")


def test_hwmon_rails_give_volts_times_amps_and_skip_other_sensors(tmp_path):
    _hwmon(tmp_path, {"VDD_IN": (5000, 1000), "VDD_CPU_GPU_CV": (5000, 400), "VDD_SOC": (5000, 300)})
    _hwmon(tmp_path, {"temp": (1, 1)}, name="cpu_thermal", idx=2)
    assert power.read_rails_mw(tmp_path) == {"VDD_IN": 5000.0, "VDD_CPU_GPU_CV": 2000.0, "VDD_SOC": 1500.0}


def test_iio_rails_of_older_jetpacks(tmp_path):
    dev = tmp_path / "bus" / "i2c" / "drivers" / "ina3221x" / "6-0040" / "iio:device0"
    dev.mkdir(parents=True)
    for n, (name, mw) in enumerate([("POM_5V_IN", 3100), ("POM_5V_GPU", 400), ("NC", 0)]):
        (dev / f"rail_name_{n}").write_text(name)
        (dev / f"in_power{n}_input").write_text(str(mw))
    assert power.read_rails_mw(tmp_path) == {"POM_5V_IN": 3100.0, "POM_5V_GPU": 400.0}


def test_tegrastats_lines_of_orin_and_nano():
    orin = ("11-26-2026 14:00:00 RAM 2461/7620MB (lfb 2x4MB) CPU [3%@729,1%@729] GR3D_FREQ 0% cpu@46.2C "
            "VDD_IN 4816mW/4816mW VDD_CPU_GPU_CV 481mW/481mW VDD_SOC 1443mW/1443mW")
    nano = "RAM 1500/3956MB CPU [5%@102] POM_5V_IN 3000/3100 POM_5V_GPU 40/40 POM_5V_CPU 400/410"
    assert power.parse_tegrastats(orin) == {"VDD_IN": 4816.0, "VDD_CPU_GPU_CV": 481.0, "VDD_SOC": 1443.0}
    assert power.parse_tegrastats(nano) == {"POM_5V_IN": 3000.0, "POM_5V_GPU": 40.0, "POM_5V_CPU": 400.0}


def test_sampler_reports_mean_peak_and_energy_per_call(tmp_path):
    _hwmon(tmp_path, {"VDD_IN": (5000, 1000), "VDD_SOC": (5000, 200)})
    current = tmp_path / "class" / "hwmon" / "hwmon1" / "curr1_input"
    with power.PowerSampler(interval_s=0.005, sys_root=tmp_path) as p:
        time.sleep(0.05)
        current.write_text("1400\n")  # the load rises: 7 W
        time.sleep(0.05)
    s = p.summary(calls=10)
    assert s["source"] == "hwmon" and s["samples"] >= 4 and s["total_rail"] == "VDD_IN"
    assert s["rails_mw"]["VDD_IN"]["peak"] == 7000.0 and 5000.0 < s["rails_mw"]["VDD_IN"]["mean"] < 7000.0
    assert s["rails_mw"]["VDD_SOC"] == {"mean": 1000.0, "peak": 1000.0}
    assert s["mj_per_call"] == pytest.approx(s["mean_mw"] * s["seconds"] / 10, rel=1e-2)  # of rounded figures


def test_no_rails_is_reported_not_invented(tmp_path):
    p = power.PowerSampler(sys_root=tmp_path)
    with p:
        pass
    assert not p.available() and p.summary(5)["available"] is False
