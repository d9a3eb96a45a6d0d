"""Scoring engines: the code that turns a feature matrix into predicted CTR.

Every engine takes a float64 matrix whose columns follow the bundle's feature
order (NaN for missing) and returns float64 probabilities, one per row.
LightGBM's own ``predict`` is the reference and the fallback for every other
engine.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from ctr_inference.bundle import Bundle

logger = logging.getLogger(__name__)


class Engine(Protocol):
    """A loaded model that scores feature matrices."""

    name: str

    def predict(self, matrix: np.ndarray) -> np.ndarray: ...


class LightGBMEngine:
    """LightGBM's own ``Booster.predict``: the reference engine."""

    name = "lightgbm"

    def __init__(self, bundle: Bundle, threads: int):
        self._booster = bundle.load_booster()
        self._threads = threads

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        return self._booster.predict(matrix, num_threads=self._threads)


def cpu_quota(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """Return how many CPUs this process may use: the cgroup quota, else the affinity mask.

    Kubernetes CPU limits arrive as a CFS quota (cgroup v2 ``cpu.max``, or
    ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` in cgroup v1), not as a
    smaller core count, so ``os.cpu_count()`` alone would oversubscribe a pod.
    A fractional quota rounds up, and the result is at least 1.
    """
    root = Path(cgroup_root)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = None
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            quota = int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        try:
            quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            if quota_us > 0 and period_us > 0:
                quota = quota_us / period_us
        except (OSError, ValueError):
            quota = None
    if quota is None:
        return max(1, available)
    return max(1, min(available, math.ceil(quota)))


def load_engine(bundle: Bundle, threads: int | None = None) -> Engine:
    """Load the engine that scores this bundle."""
    threads = threads or cpu_quota()
    engine = LightGBMEngine(bundle, threads)
    logger.info("scoring engine %s with %d threads for model %s version %s",
                engine.name, threads, bundle.model_name, bundle.model_version)
    return engine
