"""What the CPU under this process can run, and how much of it the container may use.

Compiled forms of a model contain machine code for one instruction-set level.
The bake records the ``/proc/cpuinfo`` flags that level needs. At start-up the
worker compares them with the flags of the CPU it runs on. When one is
missing, it scores with LightGBM, because the compiled code would stop the
process with SIGILL there.

Target levels are the x86-64 micro-architecture levels of the System V psABI
(x86-64-v2, -v3, -v4), which both GCC and LLVM accept as a CPU name, so one
artifact runs on every CPU generation that has the level's flags:

- x86-64-v3 (AVX2, FMA, BMI1/2): Intel Haswell and later, AMD Zen and later.
  On AWS: c5/m5/r5 and every later Intel family (c6i, m6i, c7i, m7i, ...),
  and the AMD families c5a/m5a, c6a/m6a and c7a/m7a.
- x86-64-v4 (AVX-512): Intel Skylake-SP and later, AMD Zen 4. On AWS: the
  Intel families above from c5/m5 on, and c7a/m7a, but not c5a/m5a or c6a/m6a.
- Graviton (arm64) instances run none of these and score with LightGBM.

NOTE: the instance families are mapped from the processor models AWS lists
for them and were not checked on those instances. The start-up flag check,
not this list, is what keeps a form off a CPU that cannot run it.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = "/proc/cpuinfo"
HOST = "host"

# /proc/cpuinfo flag names of each level, cumulative. LZCNT appears as "abm"
# on both Intel and AMD CPUs.
_BASELINE = ("cmov", "cx8", "fpu", "fxsr", "mmx", "sse", "sse2")
_V2 = _BASELINE + ("cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3")
_V3 = _V2 + ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")
_V4 = _V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
TARGET_FLAGS: dict[str, tuple[str, ...]] = {
    "x86-64": _BASELINE,
    "x86-64-v2": _V2,
    "x86-64-v3": _V3,
    "x86-64-v4": _V4,
}

# Flags that name instructions a code generator may emit when it targets the
# host CPU; the rest of /proc/cpuinfo (virtualization, power, bug workarounds)
# does not change which code runs.
_INSTRUCTION_FLAG_PREFIXES = (
    "sse", "ssse3", "avx", "fma", "bmi", "f16c", "movbe", "popcnt", "abm", "lzcnt", "cx16",
    "lahf_lm", "xsave", "aes", "vaes", "pclmulqdq", "vpclmulqdq", "sha_ni", "adx", "rdrand",
    "rdseed", "gfni", "amx", "xop", "tbm", "3dnowprefetch", "clflushopt", "clwb", "movdir",
    "serialize", "cmov", "cx8", "fpu", "fxsr", "mmx",
)


class UnknownTargetError(ValueError):
    """A compile target is neither ``host`` nor a known x86-64 level."""


@dataclass(frozen=True)
class CpuInfo:
    """The CPU this process runs on: architecture, model name and instruction-set flags."""

    arch: str
    model_name: str
    flags: frozenset[str]

    def instruction_flags(self) -> list[str]:
        """Return the flags that name instruction-set extensions, sorted."""
        return sorted(flag for flag in self.flags if flag.startswith(_INSTRUCTION_FLAG_PREFIXES))


def read_cpuinfo(path: str | os.PathLike = CPUINFO, arch: str | None = None) -> CpuInfo:
    """Read the first processor's model name and flags from ``/proc/cpuinfo``.

    A missing or unreadable file gives an empty flag set, so every compiled
    target then counts as unsupported.
    """
    model_name = ""
    flags: frozenset[str] = frozenset()
    try:
        text = Path(path).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model_name:
            model_name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
        if model_name and flags:
            break
    return CpuInfo(arch=arch or platform.machine(), model_name=model_name, flags=flags)


def required_flags(target: str, cpu: CpuInfo) -> list[str]:
    """Return the /proc/cpuinfo flags that code compiled for ``target`` needs, sorted.

    ``host`` means the CPU that compiles, so its instruction-set flags are all required.

    Raises:
        UnknownTargetError: ``target`` is neither ``host`` nor a key of ``TARGET_FLAGS``.
    """
    if target == HOST:
        return cpu.instruction_flags()
    if target not in TARGET_FLAGS:
        raise UnknownTargetError(
            f"unknown compile target {target!r}: expected {HOST!r} or one of {sorted(TARGET_FLAGS)}"
        )
    return sorted(TARGET_FLAGS[target])


def missing_flags(required: list[str] | tuple[str, ...], cpu: CpuInfo) -> list[str]:
    """Return the required flags that ``cpu`` lacks, sorted."""
    return sorted(set(required) - cpu.flags)


def cpu_quota(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """Return how many CPUs this process may use: the cgroup quota, else the affinity mask.

    Kubernetes CPU limits arrive as a CFS quota (cgroup v2 ``cpu.max``, or
    ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` in cgroup v1), not as a
    smaller core count, so ``os.cpu_count()`` alone would oversubscribe a pod.
    A fractional quota rounds up, and the result is at least 1 and at most the
    number of CPUs in the affinity mask.
    """
    if hasattr(os, "sched_getaffinity"):
        available = len(os.sched_getaffinity(0))
    else:
        available = os.cpu_count() or 1
    quota = _cgroup_v2_quota(Path(cgroup_root))
    if quota is None:
        quota = _cgroup_v1_quota(Path(cgroup_root))
    if quota is None:
        return max(1, available)
    return max(1, min(available, math.ceil(quota)))


def _cgroup_v2_quota(root: Path) -> float | None:
    # cpu.max is "<quota> <period>" in microseconds, or "max <period>" without a limit.
    try:
        fields = (root / "cpu.max").read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def _cgroup_v1_quota(root: Path) -> float | None:
    # The controller directory is "cpu" or "cpu,cpuacct" depending on the distribution.
    for directory in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota = int((directory / "cpu.cfs_quota_us").read_text())
            period = int((directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        # A quota of -1 means no limit.
        if quota > 0 and period > 0:
            return quota / period
        return None
    return None
