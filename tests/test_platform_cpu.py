"""platform.cpu_int8_kind on crafted /proc/cpuinfo texts: what decides how ONNX Runtime's int8 kernels
multiply (and so which INT8 weight range the exporter picks: edgekit.export.qdq.reduce_range_for)."""
from __future__ import annotations

import pytest

from edgekit.export.qdq import portability_warning, reduce_range_for
from edgekit.platform import cpu, cpu_int8_kind

EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq \
pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm \
cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext ssbd ibrs ibpb stibp vmmcall fsgsbase \
tsc_adjust bmi1 avx2 smep bmi2 rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr \
arat npt nrip_save umip rdpid
"""
SKYLAKE_AVX512 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 fma bmi1 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl
"""
CASCADE_LAKE_VNNI = SKYLAKE_AVX512.replace("avx512vl", "avx512vl avx512_vnni")
ALDER_LAKE_AVX_VNNI = """model name\t: 12th Gen Intel(R) Core(TM) i7-12700
flags\t\t: fpu sse sse2 avx avx2 fma avx_vnni
"""
ORIN_A78AE = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp \
uscat ilrcpc flagm paca pacg
CPU implementer\t: 0x41
CPU part\t: 0xd42
"""
GRACE_I8MM = "Features\t: fp asimd asimddp sve i8mm bf16 sve2\n"
CORTEX_A57 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"  # Jetson Nano / TX2: no dot product


@pytest.mark.parametrize("text, arch, kind, features", [
    (EPYC_AVX2, "x86_64", "x86-avx2", ["avx2"]),
    (SKYLAKE_AVX512, "x86_64", "x86-avx512", ["avx512bw", "avx2"]),
    (CASCADE_LAKE_VNNI, "x86_64", "x86-vnni", ["avx512_vnni", "avx512bw", "avx2"]),
    (ALDER_LAKE_AVX_VNNI, "x86_64", "x86-vnni", ["avx_vnni", "avx2"]),
    ("flags\t: fpu sse sse2 ssse3\n", "x86_64", "x86", []),
    (ORIN_A78AE, "aarch64", "arm-dotprod", ["asimddp"]),
    (GRACE_I8MM, "aarch64", "arm-i8mm", ["asimddp", "i8mm"]),
    (CORTEX_A57, "aarch64", "arm", []),
    ("", "arm64", "arm", []),  # macOS: no /proc/cpuinfo
    ("flags\t: avx2\n", "riscv64", "unknown", []),
])
def test_cpu_int8_kind(text, arch, kind, features):
    got = cpu_int8_kind(text, arch)
    assert got["kind"] == kind and got["features"] == features


def test_this_machine_has_a_kind():
    kind = cpu()["int8"]["kind"]
    assert kind in ("x86-vnni", "x86-avx512", "x86-avx2", "x86", "arm-i8mm", "arm-dotprod", "arm", "unknown")


@pytest.mark.parametrize("kind, reduce", [("x86-avx2", True), ("x86-avx512", True), ("x86", True),
                                          ("unknown", True), ("x86-vnni", False), ("arm-dotprod", False),
                                          ("arm-i8mm", False), ("arm", False)])
def test_reduce_range_auto_follows_the_cpu(kind, reduce):
    assert reduce_range_for("auto", kind)[0] is reduce
    assert reduce_range_for("on", kind) == (True, "asked (--reduce-range on)")
    assert reduce_range_for("off", kind)[0] is False


def test_portability_warning():
    assert portability_warning(True, "x86-avx2") is None  # 7-bit weights: the same on every CPU
    assert "AVX2" in portability_warning(False, "x86-vnni") and "--reduce-range on" in portability_warning(
        False, "arm-dotprod")
    assert "saturate" in portability_warning(False, "x86-avx2")


def test_unknown_reduce_range_value_is_an_error():
    from edgekit.errors import EdgekitError

    with pytest.raises(EdgekitError, match="unknown --reduce-range value 'yes'"):
        reduce_range_for("yes", "x86-avx2")
