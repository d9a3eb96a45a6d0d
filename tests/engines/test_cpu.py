"""CPU flags from /proc/cpuinfo and the scoring thread count from cgroup CPU quotas."""

from __future__ import annotations

import os

import pytest
from ctr_inference.cpu import (
    HOST,
    TARGET_FLAGS,
    CpuInfo,
    UnknownTargetError,
    cpu_quota,
    missing_flags,
    read_cpuinfo,
    required_flags,
)

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7R13 Processor
flags\t\t: fpu vme de pse tsc msr cx8 cmov mmx fxsr sse sse2 ht syscall nx lm constant_tsc
 rep_good nopl cx16 lahf_lm popcnt sse4_1 sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave
 hypervisor aes vaes

processor\t: 1
model name\t: AMD EPYC 7R13 Processor
flags\t\t: fpu
"""

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid
CPU implementer\t: 0x41
"""

AVAILABLE = len(os.sched_getaffinity(0))


def write_cpuinfo(tmp_path, text: str):
    path = tmp_path / "cpuinfo"
    # The flags line continues over several lines above only for readability.
    path.write_text(text.replace("\n rep_good", " rep_good").replace("\n hypervisor", " hypervisor"))
    return path


def test_cpuinfo_x86_first_processor(tmp_path):
    cpu = read_cpuinfo(write_cpuinfo(tmp_path, X86_CPUINFO), arch="x86_64")
    assert cpu.model_name == "AMD EPYC 7R13 Processor"
    assert "avx2" in cpu.flags
    assert "vaes" in cpu.flags
    assert cpu.arch == "x86_64"


def test_cpuinfo_instruction_flags_only(tmp_path):
    cpu = read_cpuinfo(write_cpuinfo(tmp_path, X86_CPUINFO), arch="x86_64")
    flags = cpu.instruction_flags()
    assert "avx2" in flags
    assert "aes" in flags
    assert "hypervisor" not in flags
    assert "constant_tsc" not in flags


def test_cpuinfo_arm_features(tmp_path):
    cpu = read_cpuinfo(write_cpuinfo(tmp_path, ARM_CPUINFO), arch="aarch64")
    assert "asimd" in cpu.flags
    assert cpu.model_name == ""


def test_cpuinfo_missing_file(tmp_path):
    cpu = read_cpuinfo(tmp_path / "absent", arch="x86_64")
    assert cpu.flags == frozenset()
    assert missing_flags(required_flags("x86-64-v3", cpu), cpu) == sorted(TARGET_FLAGS["x86-64-v3"])


def test_required_flags_levels_are_cumulative():
    v2 = set(TARGET_FLAGS["x86-64-v2"])
    v3 = set(TARGET_FLAGS["x86-64-v3"])
    v4 = set(TARGET_FLAGS["x86-64-v4"])
    assert v2 < v3 < v4
    assert {"avx2", "fma", "bmi2", "abm", "movbe"} <= v3
    assert "avx512f" in v4


def test_required_flags_host_uses_own_flags(tmp_path):
    cpu = read_cpuinfo(write_cpuinfo(tmp_path, X86_CPUINFO), arch="x86_64")
    assert required_flags(HOST, cpu) == cpu.instruction_flags()


def test_required_flags_unknown_target():
    cpu = CpuInfo("x86_64", "", frozenset())
    with pytest.raises(UnknownTargetError, match="x86-64-v9"):
        required_flags("x86-64-v9", cpu)


def test_missing_flags_v3_on_older_cpu(tmp_path):
    cpu = read_cpuinfo(write_cpuinfo(tmp_path, X86_CPUINFO), arch="x86_64")
    assert missing_flags(required_flags("x86-64-v3", cpu), cpu) == []
    assert missing_flags(required_flags("x86-64-v4", cpu), cpu) == [
        "avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl"]


def test_this_machine_reads_flags():
    cpu = read_cpuinfo()
    assert cpu.flags, "expected /proc/cpuinfo to list CPU flags"


def cgroup_v2(tmp_path, cpu_max: str):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def cgroup_v1(tmp_path, quota: str, period: str, directory: str = "cpu"):
    controller = tmp_path / directory
    controller.mkdir()
    (controller / "cpu.cfs_quota_us").write_text(quota + "\n")
    (controller / "cpu.cfs_period_us").write_text(period + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000", AVAILABLE),
        ("100000 100000", 1),
        ("50000 100000", 1),
        ("150000 100000", min(AVAILABLE, 2)),
        ("800000 100000", AVAILABLE),
        ("0 100000", AVAILABLE),
        ("100000 0", AVAILABLE),
        ("garbage", AVAILABLE),
    ],
)
def test_cpu_quota_cgroup_v2(tmp_path, cpu_max, expected):
    assert cpu_quota(cgroup_v2(tmp_path, cpu_max)) == expected


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [
        ("-1", "100000", AVAILABLE),
        ("100000", "100000", 1),
        ("25000", "100000", 1),
        ("150000", "100000", min(AVAILABLE, 2)),
        ("100000", "0", AVAILABLE),
    ],
)
def test_cpu_quota_cgroup_v1(tmp_path, quota, period, expected):
    assert cpu_quota(cgroup_v1(tmp_path, quota, period)) == expected


def test_cpu_quota_cgroup_v1_cpuacct_directory(tmp_path):
    assert cpu_quota(cgroup_v1(tmp_path, "100000", "100000", directory="cpu,cpuacct")) == 1


def test_cpu_quota_v2_wins_over_v1(tmp_path):
    cgroup_v1(tmp_path, "-1", "100000")
    assert cpu_quota(cgroup_v2(tmp_path, "100000 100000")) == 1


def test_cpu_quota_without_cgroup_files(tmp_path):
    assert cpu_quota(tmp_path) == AVAILABLE
