"""A content-keyed cache of compiled models, so a rebake reuses the compiled form instead of compiling again.

``compile_cached(bundle_dir, features)`` puts the same files into a bundle
directory as ``compile_bundle`` (``check_rows.parquet`` and, when an engine
matched LightGBM, ``compiled/model.<engine>.<ext>``) and returns the
``compiled`` section for ``bundle.json`` without the measurements. It
compiles only when the cache has no entry for the key; otherwise it copies
the entry's files.

An entry is the folder ``<cache>/compiled/<key>/`` (the cache is
``$CTR_CACHE_DIR``, else ``.cache/images`` of the checkout)::

    entry.json                      the section, the measurements of the compile, the key's inputs
    check_rows.parquet
    compiled/model.<engine>.<ext>   absent when no engine matched LightGBM

The key is a SHA-256 over every input that decides those bytes or the
outcome of the parity check. Those are the model file, the features, the
sample rows, the target and the candidate engines. They are also the versions
of the engines' packages, LightGBM, NumPy, PyArrow and Python, this machine's
architecture and instruction-set flags, and the source of the modules that
compile and check.
A compile whose candidate crashed, failed or timed out is not stored, because
such a result can be transient (a loaded machine, too little memory).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ctr_images import tools
from ctr_images.compile import (
    CRASHED,
    DEFAULT_ENGINES,
    DEFAULT_TARGET,
    FAILED,
    TIMED_OUT,
    bundle_model_file,
    compile_bundle,
    engine_version,
    split_measurements,
)

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_FOLDER = "compiled"
ENTRY_FILE = "entry.json"

# The Python packages whose versions decide what an engine compiles.
ENGINE_PACKAGES = {
    "lleaves": ("lleaves", "llvmlite"),
    "tl2cgen": ("tl2cgen", "treelite"),
}
# The packages that make the check rows and LightGBM's expected predictions.
CHECK_PACKAGES = ("lightgbm", "numpy", "pyarrow")
# Modules whose code decides the compiled files, the check rows or the parity check.
CODE_MODULES = ("ctr_images.compile", "ctr_inference.check_rows", "ctr_inference.engines",
                "ctr_inference.cpu")
# Candidate outcomes that a later compile may not repeat.
TRANSIENT_STATUSES = (CRASHED, FAILED, TIMED_OUT)


@dataclass(frozen=True)
class CompiledForm:
    """The result of compiling a bundle's model, or of reusing a cached compile."""

    # The ``compiled`` section of bundle.json, without measurements.
    section: dict
    # Timings and the baking CPU of the compile that made the files.
    measurements: dict
    cache_key: str
    cache_entry: Path
    cache_hit: bool

    def report(self) -> dict:
        """Return the measurements with the cache facts, as the bake writes them beside the bundle."""
        return {
            "engine": self.section.get("engine"),
            "target": self.section.get("target", {}).get("cpu"),
            "cache": {"key": self.cache_key, "entry": str(self.cache_entry), "hit": self.cache_hit},
            **self.measurements,
        }


def default_cache_dir() -> Path:
    """Return the folder of compiled-model cache entries: ``<image build cache>/compiled``."""
    return tools.cache_root() / CACHE_FOLDER


def cache_key_inputs(model_file: Path, features: list, target: str, engines: tuple[str, ...],
                     sample=None) -> dict:
    """Return every input of the cache key, as a JSON-ready dict."""
    import numpy as np
    from ctr_inference.bundle import sha256_file
    from ctr_inference.contract import Feature
    from ctr_inference.cpu import read_cpuinfo

    packages = sorted({name for engine in engines for name in ENGINE_PACKAGES.get(engine, (engine,))}
                      | set(CHECK_PACKAGES))
    inputs = {
        "format": CACHE_FORMAT,
        "model_sha256": sha256_file(model_file),
        "features": [(item if isinstance(item, Feature) else Feature.from_dict(item)).to_dict()
                     for item in features],
        "sample_sha256": None,
        "target": target,
        "engines": list(engines),
        "versions": {name: engine_version(name) for name in packages},
        "python": platform.python_version(),
        "arch": platform.machine(),
        "instruction_flags": read_cpuinfo().instruction_flags(),
        "code_sha256": {module: _module_sha256(module) for module in CODE_MODULES},
    }
    if sample is not None:
        matrix = np.ascontiguousarray(sample, dtype=np.float64)
        inputs["sample_sha256"] = hashlib.sha256(repr(matrix.shape).encode() + matrix.tobytes()).hexdigest()
    if "tl2cgen" in engines:
        # TL2cgen compiles generated C with the host's GCC.
        inputs["gcc"] = _gcc_version()
    return inputs


def cache_key(inputs: dict) -> str:
    """Return the SHA-256 of the canonical JSON of ``cache_key_inputs``."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _module_sha256(module: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(module)
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()


def _gcc_version() -> str:
    try:
        return subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def compile_cached(
    bundle_dir: str | os.PathLike,
    features: list,
    *,
    sample=None,
    engines: tuple[str, ...] = DEFAULT_ENGINES,
    target: str = DEFAULT_TARGET,
    cache_dir: str | os.PathLike | None = None,
) -> CompiledForm:
    """Write the check rows and the compiled form into a bundle directory, from the cache when it can.

    Args:
        bundle_dir: a bundle directory that already contains ``model.lgb``.
        features: the bundle's features in model column order, as ``compile_bundle`` takes them.
        sample: optional real feature rows for the check rows' ordinary kind.
        engines: candidate engines, tried in this order.
        target: ``host`` or an x86-64 level from ``ctr_inference.cpu.TARGET_FLAGS``.
        cache_dir: the folder of cache entries; None means ``default_cache_dir()``.

    Raises:
        UnknownTargetError: ``target`` is not known.
        FileNotFoundError: the bundle directory has no ``model.lgb``.
    """
    from ctr_inference.cpu import read_cpuinfo, required_flags

    bundle_dir = Path(bundle_dir)
    model_file = bundle_model_file(bundle_dir)
    # Reject an unknown target before hashing anything.
    required_flags(target, read_cpuinfo())

    inputs = cache_key_inputs(model_file, features, target, tuple(engines), sample)
    key = cache_key(inputs)
    entry = Path(default_cache_dir() if cache_dir is None else cache_dir) / key

    restored = _restore(entry, bundle_dir)
    if restored is not None:
        section, measurements = restored
        logger.info("reused the compiled form (%s, target %s) from cache entry %s",
                    section.get("engine") or "none", target, entry)
        return CompiledForm(section, measurements, key, entry, cache_hit=True)

    section, measurements = split_measurements(
        compile_bundle(bundle_dir, features, sample=sample, engines=tuple(engines), target=target))
    transient = [c["engine"] for c in section["candidates"] if c["status"] in TRANSIENT_STATUSES]
    if transient:
        logger.warning("not caching the compiled form of %s: candidate %s crashed, failed or timed out, "
                       "which a later bake may not repeat", model_file, ", ".join(transient))
    else:
        _store(entry, bundle_dir, section, measurements, inputs)
    return CompiledForm(section, measurements, key, entry, cache_hit=False)


def _entry_files(section: dict) -> list[tuple[str, str]]:
    """Return (path relative to the bundle, SHA-256) of every file a section names."""
    files = [(section["check_rows"]["file"], section["check_rows"]["sha256"])]
    if section.get("engine"):
        files.append((section["file"], section["sha256"]))
    return files


def _restore(entry: Path, bundle_dir: Path) -> tuple[dict, dict] | None:
    """Copy a cache entry's files into ``bundle_dir``; return its section and measurements, or None on a miss."""
    from ctr_inference.bundle import sha256_file

    if not entry.is_dir():
        return None
    try:
        document = json.loads((entry / ENTRY_FILE).read_text())
        section, measurements = document["section"], document["measurements"]
        files = _entry_files(section)
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("cache entry %s is unreadable (%s: %s); removing it and compiling again",
                       entry, type(error).__name__, error)
        shutil.rmtree(entry, ignore_errors=True)
        return None

    for relative, expected in files:
        cached = entry / relative
        actual = sha256_file(cached) if cached.is_file() else "missing"
        if actual != expected:
            logger.warning("cache entry %s has %s with SHA-256 %s, its entry.json records %s; "
                           "removing it and compiling again", entry, relative, actual, expected)
            shutil.rmtree(entry, ignore_errors=True)
            return None
    for relative, _ in files:
        target = bundle_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry / relative, target)
    return section, measurements


def _store(entry: Path, bundle_dir: Path, section: dict, measurements: dict, inputs: dict) -> None:
    """Copy the compiled files of ``bundle_dir`` into a new cache entry, atomically.

    A failure to write the cache only costs a later bake a compile, so it is logged, not raised.
    """
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name[:16]}-", dir=entry.parent))
    except OSError as error:
        logger.warning("cannot write the compiled-model cache in %s (%s); the next bake compiles again",
                       entry.parent, error)
        return
    try:
        for relative, _ in _entry_files(section):
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle_dir / relative, staging / relative)
        document = {"section": section, "measurements": measurements, "key_inputs": inputs}
        (staging / ENTRY_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        os.chmod(staging, 0o755)
        os.rename(staging, entry)
        logger.info("stored the compiled form in cache entry %s", entry)
    except OSError as error:
        # Another bake may have stored the same key first, which makes the rename fail.
        if not (entry / ENTRY_FILE).is_file():
            logger.warning("cannot store cache entry %s (%s); the next bake compiles again", entry, error)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
