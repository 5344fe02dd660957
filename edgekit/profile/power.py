"""Jetson power while a benchmark runs: the INA3221 monitors on the module's rails, sampled on a thread.

Where the rails are read, first found wins:
  - hwmon (JetPack 6 / Orin, and JetPack 5's Orin): /sys/class/hwmon/hwmon*/ with name "ina3221";
    in[123]_label (VDD_IN, VDD_CPU_GPU_CV, VDD_SOC), in[123]_input bus mV, curr[123]_input mA;
  - iio (JetPack 4-5 / Xavier, Nano): /sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_N and
    in_power{N}_input mW;
  - tegrastats (any JetPack; a subprocess at --interval ms) when sysfs is not readable: "VDD_IN 4816mW/4816mW"
    (Orin) or "POM_5V_IN 3000/3000" (Nano, Xavier).
Elsewhere there are no rails: `PowerSampler.available()` is False and the report says so. Reading sysfs
files only; no jtop service needed (jtop reads the same files)."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

SYS = Path("/sys")
# Rails that measure the module's whole input. Where none exists the total is the sum of all rails, as
# jetson_stats does: the AGX Orin has VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0 (the 5 V system rail only) and
# VDDQ_VDD2_1V8AO, no VDD_IN; the AGX Xavier has GPU, CPU, SOC, CV, VDDRQ, SYS5V. (Orin NX / Orin Nano:
# VDD_IN, VDD_CPU_GPU_CV, VDD_SOC; Nano, TX2: POM_5V_IN.)
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
SUM_OF_RAILS = "sum of rails"
_TEGRASTATS_RAIL = re.compile(r"\b((?:VDD|POM|VIN|VDDQ)_[A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?")


def hwmon_rails(sys_root: Path = SYS) -> dict[str, tuple[Path, Path]]:
    """{rail label: (bus mV file, current mA file)} of every ina3221 hwmon device."""
    rails = {}
    for dev in sorted((sys_root / "class" / "hwmon").glob("hwmon*")):
        try:
            if (dev / "name").read_text().strip() != "ina3221":
                continue
        except OSError:
            continue
        for label in sorted(dev.glob("in[1-3]_label")):
            n = label.name[2]
            mv, ma = dev / f"in{n}_input", dev / f"curr{n}_input"
            name = label.read_text().strip()
            if mv.exists() and ma.exists() and name and not name.startswith("NC"):
                rails[name] = (mv, ma)
    return rails


def iio_rails(sys_root: Path = SYS) -> dict[str, Path]:
    """{rail name: power mW file} of JetPack 4-5's ina3221x iio devices."""
    rails = {}
    for dev in sorted((sys_root / "bus" / "i2c" / "drivers" / "ina3221x").glob("*/iio:device*")):
        for name_file in sorted(dev.glob("rail_name_[0-9]")):
            power = dev / f"in_power{name_file.name[-1]}_input"
            name = name_file.read_text().strip()
            if power.exists() and name and not name.startswith("NC"):
                rails[name] = power
    return rails


def parse_tegrastats(line: str) -> dict[str, float]:
    """{rail: instantaneous mW} from one tegrastats line."""
    return {m.group(1): float(m.group(2)) for m in _TEGRASTATS_RAIL.finditer(line)}


def read_rails_mw(sys_root: Path = SYS) -> dict[str, float]:
    """One reading of every rail, mW (empty where there are none)."""
    out = {}
    for name, (mv, ma) in hwmon_rails(sys_root).items():
        try:
            out[name] = float(mv.read_text()) * float(ma.read_text()) / 1000.0
        except (OSError, ValueError):
            pass
    if out:
        return out
    for name, f in iio_rails(sys_root).items():
        try:
            out[name] = float(f.read_text())
        except (OSError, ValueError):
            pass
    return out


class PowerSampler:
    """`with PowerSampler() as p: work()` then `p.summary(calls)`: mean and peak mW per rail over the work,
    the total (the input rail VDD_IN / POM_5V_IN, else the sum of all rails: `total_rail`) and its energy
    per call when `calls` is given."""

    def __init__(self, interval_s: float = 0.05, sys_root: Path = SYS) -> None:
        self.interval_s, self.sys_root = interval_s, sys_root
        self.samples: list[dict[str, float]] = []
        self.source = ("hwmon" if hwmon_rails(sys_root) else "iio" if iio_rails(sys_root) else
                       "tegrastats" if shutil.which("tegrastats") and sys_root == SYS else None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self.seconds = 0.0

    def available(self) -> bool:
        return self.source is not None

    def __enter__(self) -> "PowerSampler":
        self._t0 = time.perf_counter()
        if self.source in ("hwmon", "iio"):
            self._thread = threading.Thread(target=self._poll, name="edgekit-power", daemon=True)
            self._thread.start()
        elif self.source == "tegrastats":
            ms = max(10, int(self.interval_s * 1000))
            self._proc = subprocess.Popen(["tegrastats", "--interval", str(ms)], stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read_tegrastats, name="edgekit-power", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _poll(self) -> None:
        while not self._stop.is_set():
            reading = read_rails_mw(self.sys_root)
            if reading:
                self.samples.append(reading)
            self._stop.wait(self.interval_s)

    def _read_tegrastats(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            reading = parse_tegrastats(line)
            if reading:
                self.samples.append(reading)
            if self._stop.is_set():
                break

    def summary(self, calls: int = 0) -> dict:
        if not self.available():
            return {"available": False, "reason": "no INA3221 rails here (Jetson only: hwmon, iio or tegrastats)"}
        if not self.samples:
            return {"available": True, "source": self.source, "samples": 0,
                    "reason": "the work ended before the first reading: time more calls"}
        rails = sorted({k for s in self.samples for k in s})
        out = {"available": True, "source": self.source, "samples": len(self.samples),
               "seconds": round(self.seconds, 3), "rails_mw": {}}
        for r in rails:
            values = [s[r] for s in self.samples if r in s]
            out["rails_mw"][r] = {"mean": round(sum(values) / len(values), 1), "peak": round(max(values), 1)}
        total = next((r for r in TOTAL_RAILS if r in out["rails_mw"]), None)
        if total:
            out["total_rail"] = total
            out["mean_mw"] = out["rails_mw"][total]["mean"]
        else:  # no input rail: every rail is a part of the module, so their sum is the total
            sums = [sum(s.values()) for s in self.samples]
            out["total_rail"], out["total_of"] = SUM_OF_RAILS, rails
            out["mean_mw"] = round(sum(sums) / len(sums), 1)
            out["peak_mw"] = round(max(sums), 1)
        if calls:
            out["mj_per_call"] = round(out["mean_mw"] * self.seconds / calls, 3)
        return out
