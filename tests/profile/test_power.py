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


# ---- the Orin modules' rails (labels as the devices report them: Jetson Linux developer guide, "Jetson
# Orin Nano Series, Jetson Orin NX Series and Jetson AGX Orin Series", power monitor tables; the same
# labels in the kernel's tegra234 device trees and in jetson_stats' readings) ------------------------------
def _ina3221(root: Path, idx: int, channels: list[tuple[str, int, int]]) -> None:
    """One INA3221 as JetPack 6's hwmon shows it: in{n}_label, in{n}_input (mV), curr{n}_input (mA)."""
    dev = root / "class" / "hwmon" / f"hwmon{idx}"
    dev.mkdir(parents=True)
    (dev / "name").write_text("ina3221\n")
    for n, (label, mv, ma) in enumerate(channels, start=1):
        (dev / f"in{n}_label").write_text(label + "\n")
        (dev / f"in{n}_input").write_text(f"{mv}\n")
        (dev / f"curr{n}_input").write_text(f"{ma}\n")


ORIN_MODULES = {
    # AGX Orin: two monitors (I2C 1-0040 and 1-0041), no VDD_IN; VIN_SYS_5V0 is the 5 V system rail only
    "agx_orin": [[("VDD_GPU_SOC", 800, 5000), ("VDD_CPU_CV", 800, 2500), ("VIN_SYS_5V0", 5000, 600)],
                 [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 1800, 500), ("NC", 0, 0)]],
    # Orin NX and Orin Nano (p3767 module): VDD_IN is the module's input
    "orin_nx": [[("VDD_IN", 5000, 2000), ("VDD_CPU_GPU_CV", 5000, 400), ("VDD_SOC", 5000, 300)]],
    "orin_nano": [[("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 5000, 200), ("VDD_SOC", 5000, 250)]],
}


@pytest.mark.parametrize("module, total_rail, total_mw", [
    ("agx_orin", power.SUM_OF_RAILS, 4000.0 + 2000.0 + 3000.0 + 900.0),  # every rail counts
    ("orin_nx", "VDD_IN", 10000.0),
    ("orin_nano", "VDD_IN", 6000.0),
])
def test_total_power_of_each_orin_module(tmp_path, module, total_rail, total_mw):
    for i, channels in enumerate(ORIN_MODULES[module], start=1):
        _ina3221(tmp_path, i, channels)
    rails = power.read_rails_mw(tmp_path)
    assert "NC" not in rails and len(rails) == (4 if module == "agx_orin" else 3)
    with power.PowerSampler(interval_s=0.005, sys_root=tmp_path) as p:
        time.sleep(0.03)
    s = p.summary(calls=10)
    assert s["total_rail"] == total_rail and s["mean_mw"] == total_mw
    assert s["mj_per_call"] == pytest.approx(total_mw * p.seconds / 10, abs=1e-3)
    if module == "agx_orin":
        assert s["total_of"] == sorted(rails) and s["peak_mw"] == total_mw


def test_tegrastats_line_of_agx_orin_sums_its_rails():
    line = ("RAM 3000/30536MB CPU [2%@2201,1%@2201] GR3D_FREQ 14%@[407,407] tj@77.2C VDD_GPU_SOC 3150mW/2971mW "
            "VDD_CPU_CV 1431mW/1241mW VIN_SYS_5V0 4968mW/5048mW VDDQ_VDD2_1V8AO 1091mW/1091mW")
    reading = power.parse_tegrastats(line)
    assert reading == {"VDD_GPU_SOC": 3150.0, "VDD_CPU_CV": 1431.0, "VIN_SYS_5V0": 4968.0, "VDDQ_VDD2_1V8AO": 1091.0}
    p = power.PowerSampler(sys_root=Path("/nonexistent"))
    p.source, p.samples, p.seconds = "tegrastats", [reading, reading], 1.0
    s = p.summary()
    assert s["total_rail"] == power.SUM_OF_RAILS and s["mean_mw"] == 3150.0 + 1431.0 + 4968.0 + 1091.0
