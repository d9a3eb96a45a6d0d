"""Scoring engines: the code that turns a feature matrix into predicted CTR.

Every engine takes a float64 matrix whose columns follow the bundle's feature
order (NaN for missing) and returns float64 probabilities, one per row.
LightGBM's own ``predict`` is the reference and the fallback for every other
engine.

Compiled engines load a compiled form of the model that the bake stored in
the bundle (see ``bundle.json`` → ``compiled``):

- ``lleaves``: an object file made by lleaves (LLVM), loaded through
  lleaves' object cache;
- ``tl2cgen``: a shared library made by Treelite + TL2cgen with GCC.

``load_engine`` uses the compiled form only when all of these hold:

- its SHA-256 matches the one in ``bundle.json``;
- the CPU has every instruction-set flag the form was compiled for;
- the engine's library imports;
- its predictions on the bundle's check rows are within ``PARITY_TOLERANCE``
  of the ones LightGBM made at bake time.

Otherwise it logs why and scores with LightGBM.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Protocol

import numpy as np

from ctr_inference.bundle import Bundle, sha256_file
from ctr_inference.cpu import CpuInfo, cpu_quota, missing_flags, read_cpuinfo

__all__ = [
    "COMPILED_ENGINES",
    "PARITY_TOLERANCE",
    "Engine",
    "LightGBMEngine",
    "LleavesEngine",
    "Tl2cgenEngine",
    "compiled_unusable_reason",
    "cpu_quota",
    "load_compiled_engine",
    "load_engine",
]

logger = logging.getLogger(__name__)

# Largest absolute difference from LightGBM's probability that a compiled
# engine may have on any check row.
PARITY_TOLERANCE = 1e-9

# LightGBM's kZeroThreshold (1e-35 as a C float): its predictor reads any
# value with an absolute value at or below it as 0.0. Compiled engines compare
# the raw value, so they differ from LightGBM where a split threshold lies in
# that band (LightGBM puts one at -kZeroThreshold between negative values and
# zero). The compiled engines apply the same rule to those features.
LIGHTGBM_ZERO_THRESHOLD = 1.0000000180025095e-35


def zero_band_columns(model_file: str | Path) -> np.ndarray:
    """Return the feature indices with a numerical split threshold in LightGBM's zero band.

    Reads the ``split_feature``, ``decision_type`` and ``threshold`` lines of
    LightGBM's text model format. Bit 0 of ``decision_type`` marks a
    categorical split, whose threshold is a category index, not a value.
    """
    columns: set[int] = set()
    tree: dict[str, str] = {}
    with open(model_file) as handle:
        for line in handle:
            key, _, value = line.partition("=")
            if key in ("split_feature", "decision_type", "threshold"):
                tree[key] = value
            if len(tree) == 3:
                columns.update(_zero_band_splits(tree))
                tree = {}
    return np.array(sorted(columns), dtype=np.int64)


def _zero_band_splits(tree: dict[str, str]) -> list[int]:
    features = np.array(tree["split_feature"].split(), dtype=np.int64)
    decision_types = np.array(tree["decision_type"].split(), dtype=np.int64)
    thresholds = np.array(tree["threshold"].split(), dtype=np.float64)
    in_band = ((decision_types & 1) == 0) & (np.abs(thresholds) <= LIGHTGBM_ZERO_THRESHOLD)
    return features[in_band].tolist()


def _in_zero_band(values: np.ndarray) -> np.ndarray:
    in_band = np.abs(values) <= LIGHTGBM_ZERO_THRESHOLD
    in_band &= values != 0.0
    return in_band


def _lightgbm_zero_band(matrix: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Return ``matrix`` as LightGBM reads it: zero-band values of ``columns`` become 0.0.

    The input is copied only when such a value occurs, which real features
    (counts, codes, frequencies) practically never contain.
    """
    if columns.size == 0:
        return matrix
    if matrix.flags.f_contiguous:
        # Each column is contiguous, so checking column by column reads only those columns.
        affected = [column for column in columns if _in_zero_band(matrix[:, column]).any()]
    else:
        # Strided column reads cost more than one pass over the whole row-major matrix.
        in_band = _in_zero_band(matrix)
        affected = [column for column in columns if in_band[:, column].any()] if in_band.any() else []
    if not affected:
        return matrix

    matrix = matrix.copy(order="K")
    for column in affected:
        values = matrix[:, column]
        values[_in_zero_band(values)] = 0.0
    return matrix


class Engine(Protocol):
    """A loaded model that scores feature matrices."""

    name: str
    # "C" or "F": the memory order in which the engine reads a matrix without copying it.
    input_order: str

    def predict(self, matrix: np.ndarray) -> np.ndarray: ...


class LightGBMEngine:
    """LightGBM's own ``Booster.predict``: the reference engine."""

    name = "lightgbm"
    input_order = "F"

    def __init__(self, bundle: Bundle, threads: int, fallback_reason: str = ""):
        self._booster = bundle.load_booster()
        self.threads = threads
        # Why a compiled form was not used, empty when the bundle has none.
        self.fallback_reason = fallback_reason

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        return self._booster.predict(matrix, num_threads=self.threads)


class LleavesEngine:
    """A model compiled by lleaves, loaded from the object file in the bundle."""

    name = "lleaves"
    input_order = "C"

    def __init__(self, model_file: Path, artifact: Path, threads: int):
        import lleaves

        if not Path(artifact).is_file():
            # lleaves would compile from scratch and write the cache file instead.
            raise FileNotFoundError(f"lleaves object file {artifact} does not exist")
        self._model = lleaves.Model(model_file=str(model_file))
        self._model.compile(cache=str(artifact))
        self._zero_band = zero_band_columns(model_file)
        self.threads = threads

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        # lleaves reads rows as contiguous float64, so only C-ordered input is used without a copy.
        matrix = np.ascontiguousarray(_lightgbm_zero_band(matrix, self._zero_band), dtype=np.float64)
        return self._model.predict(matrix, n_jobs=self.threads)


class Tl2cgenEngine:
    """A model compiled to a shared library by Treelite and TL2cgen."""

    name = "tl2cgen"
    input_order = "C"

    def __init__(self, model_file: Path, artifact: Path, threads: int):
        import tl2cgen

        self._tl2cgen = tl2cgen
        self._predictor = tl2cgen.Predictor(str(artifact), nthread=threads)
        self._zero_band = zero_band_columns(model_file)
        self.threads = threads

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        matrix = np.ascontiguousarray(_lightgbm_zero_band(matrix, self._zero_band), dtype=np.float64)
        dmatrix = self._tl2cgen.DMatrix(matrix, dtype="float64")
        return np.asarray(self._predictor.predict(dmatrix), dtype=np.float64).reshape(-1)


COMPILED_ENGINES = {
    LleavesEngine.name: LleavesEngine,
    Tl2cgenEngine.name: Tl2cgenEngine,
}


def compiled_unusable_reason(bundle: Bundle, cpu: CpuInfo) -> str:
    """Return why the bundle's compiled form cannot run here, or "" when it can.

    Checks the metadata, the artifact's SHA-256 and the CPU, without loading the artifact.
    """
    compiled = bundle.metadata.get("compiled") or {}
    engine = compiled.get("engine")
    if not engine:
        return "the bundle has no compiled form"
    if engine not in COMPILED_ENGINES:
        return f"the bundle's compiled form is for engine {engine!r}, which this runtime does not know"

    relative = compiled.get("file", "")
    artifact = bundle.path / relative
    if not relative or not artifact.is_file():
        return f"the compiled file {relative or '(none)'} is missing from the bundle"
    actual = sha256_file(artifact)
    if actual != compiled.get("sha256"):
        return f"the compiled file {relative} has SHA-256 {actual}, the bundle records {compiled.get('sha256')}"

    target = compiled.get("target", {})
    arch = target.get("arch", "")
    if arch != cpu.arch:
        return f"the compiled form is for {arch or 'an unknown architecture'}, this CPU is {cpu.arch}"
    missing = missing_flags(target.get("required_flags", []), cpu)
    if missing:
        return (
            f"the compiled form targets {target.get('cpu', 'another CPU')} and needs CPU flags "
            f"this CPU ({cpu.model_name or 'unknown model'}) lacks: {', '.join(missing)}"
        )
    return ""


def load_compiled_engine(bundle: Bundle, threads: int) -> Engine:
    """Load the bundle's compiled form without checks; callers check first."""
    compiled = bundle.metadata["compiled"]
    engine_class = COMPILED_ENGINES[compiled["engine"]]
    return engine_class(bundle.model_file, bundle.path / compiled["file"], threads)


def _check_parity(bundle: Bundle, engine: Engine) -> str:
    from ctr_inference.check_rows import read_check_rows

    compiled = bundle.metadata["compiled"]
    check_file = (compiled.get("check_rows") or {}).get("file", "")
    if not check_file or not (bundle.path / check_file).is_file():
        return "the bundle has no check rows to verify the compiled form with"
    rows = read_check_rows(bundle.path / check_file, bundle.features)
    if rows.expected is None:
        return f"the check rows in {check_file} have no expected predictions"
    difference = np.abs(engine.predict(rows.matrix) - rows.expected)
    worst = float(np.max(np.where(np.isnan(difference), np.inf, difference)))
    if worst > PARITY_TOLERANCE:
        return (
            f"the compiled form differs from LightGBM by up to {worst:.3g} on the bundle's "
            f"{len(rows)} check rows (tolerance {PARITY_TOLERANCE:g})"
        )
    return ""


def load_engine(bundle: Bundle, threads: int | None = None, cpu: CpuInfo | None = None) -> Engine:
    """Load the fastest engine that scores this bundle correctly on this CPU.

    That is the bundle's compiled form when it passes every check in
    ``compiled_unusable_reason`` and matches the expected predictions of the
    check rows. Otherwise it is LightGBM, and the reason is logged as a
    warning and kept in the engine's ``fallback_reason``.

    Args:
        bundle: a verified bundle.
        threads: scoring threads; 0 or None means the container's CPU quota.
        cpu: the CPU to check the compiled form against; None reads ``/proc/cpuinfo``.
    """
    threads = threads or cpu_quota()
    cpu = cpu or read_cpuinfo(arch=platform.machine())

    reason = compiled_unusable_reason(bundle, cpu)
    engine: Engine | None = None
    if not reason:
        try:
            engine = load_compiled_engine(bundle, threads)
            # NOTE: this check runs in the worker's process, so a form that crashes here
            # crashes the worker. The bake ran the same check in a child process on a CPU
            # of the same flags level, which makes that unlikely but not impossible.
            reason = _check_parity(bundle, engine)
        except (ImportError, OSError, RuntimeError, ValueError, KeyError) as error:
            reason = f"loading the {bundle.metadata['compiled']['engine']} form failed: {error}"
        if reason:
            engine = None

    if engine is None:
        engine = LightGBMEngine(bundle, threads, fallback_reason=reason)
        has_compiled = bool((bundle.metadata.get("compiled") or {}).get("engine"))
        log = logger.warning if has_compiled else logger.info
        log("scoring with LightGBM predict for model %s version %s: %s",
            bundle.model_name, bundle.model_version, reason,
            extra={"model_version": bundle.model_version})

    logger.info("scoring engine %s with %d threads for model %s version %s",
                engine.name, threads, bundle.model_name, bundle.model_version,
                extra={"model_version": bundle.model_version})
    return engine
