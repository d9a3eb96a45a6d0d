"""Run the in-memory scoring benchmark and write its JSON results.

For every reference model and engine, the runner compiles the model (cached
by model SHA-256, CPU and engine version). A child process then times scoring
on 1 and 2 threads, as the median of ``repeats`` runs, and compares the
predictions with LightGBM's on the check rows and on the scored rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from bench import data, models

logger = logging.getLogger(__name__)

ENGINES = ("lightgbm", "lleaves", "tl2cgen", "onnx")
ARTIFACT_NAMES = {"lleaves": "model.o", "tl2cgen": "model.so", "onnx": "model.onnx"}
DAILY_ROWS = 1e9
DEADLINE_SECONDS = 3600
# Limits of one child process, in seconds. A compile that does not finish in
# COMPILE_LIMIT is recorded as timed out (and cached as such), because a bake
# that takes longer is not practical on a 2-core build machine.
COMPILE_LIMIT = 900
TIME_LIMIT = 1800
DEFAULT_RESULTS = Path(__file__).parent / "results.json"

# Rows scored per timed run, by model size. A run must be long enough for
# threads to pay off: on 20,000 rows lleaves gained only 1.14 times from a
# second thread, on 400,000 rows 1.94 times. 200,000 rows of the reference
# model take about 13 s of LightGBM on one core of the benchmark machine.
SCORE_ROWS = {"small": 200_000, "reference": 200_000, "large": 20_000}


def cpu_key() -> str:
    """Return a short key for this CPU: model name and instruction-set flags."""
    from ctr_inference.cpu import read_cpuinfo

    cpu = read_cpuinfo()
    text = json.dumps([cpu.arch, cpu.model_name, cpu.instruction_flags()])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def machine() -> dict:
    """Describe the machine and library versions the numbers were measured with."""
    from importlib import metadata

    from ctr_inference.cpu import cpu_quota, read_cpuinfo

    cpu = read_cpuinfo()
    versions = {}
    for package in ("lightgbm", "lleaves", "llvmlite", "treelite", "tl2cgen", "onnxruntime",
                    "onnxmltools", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = ""
    return {
        "cpu_model": cpu.model_name,
        "arch": cpu.arch,
        "cpus": os.cpu_count(),
        "cpu_quota": cpu_quota(),
        "instruction_flags": cpu.instruction_flags(),
        "python": platform.python_version(),
        "libraries": versions,
    }


def features_for(encoding: str) -> list:
    from ctr_inference.contract import CATEGORICAL_FREQUENCY, NUMERIC, Feature

    categorical_kind = CATEGORICAL_FREQUENCY if encoding == models.FREQUENCY else NUMERIC
    return ([Feature(name) for name in data.INTEGER_NAMES]
            + [Feature(name, kind=categorical_kind) for name in data.CATEGORICAL_NAMES])


def _compile(engine: str, model: models.TrainedModel, directory: Path, target: str) -> dict:
    """Return the cached compile record of ``engine``, compiling in a child process if needed."""
    from ctr_images.compile import engine_version, run_child

    version = engine_version(engine)
    engine_dir = directory / f"{engine}-{version}-{target}"
    artifact = engine_dir / ARTIFACT_NAMES[engine]
    record_path = engine_dir / "compile.json"
    if record_path.is_file() and (artifact.is_file() or json.loads(record_path.read_text())["status"] != "ok"):
        return dict(json.loads(record_path.read_text()), cached=True)

    engine_dir.mkdir(parents=True, exist_ok=True)
    logger.info("%s: compiling with %s %s", model.spec.name, engine, version)
    started = time.perf_counter()
    if engine == "onnx":
        status, result = run_child(["compile", "--engine", "onnx", "--model", str(model.path),
                                    "--artifact", str(artifact)], COMPILE_LIMIT, module="bench.measure")
    else:
        status, result = run_child(["compile", "--engine", engine, "--model", str(model.path),
                                    "--artifact", str(artifact), "--target", target], COMPILE_LIMIT)
    record = {"status": status, "engine_version": version, "target": target,
              "compile_seconds": time.perf_counter() - started, "artifact": str(artifact)}
    if status == "ok":
        record["size_bytes"] = artifact.stat().st_size
    else:
        record["detail"] = result
        logger.warning("%s: %s compile %s: %s", model.spec.name, engine, status, result)
    record_path.write_text(json.dumps(record, indent=2))
    return dict(record, cached=False)


def _prepare_rows(dataset_factory, encoding: str, rows: int, cache_dir: Path) -> Path:
    path = cache_dir / "data" / f"score-{encoding}-{models.DATA_SEED}-{rows}.npy"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, dataset_factory().score[encoding][:rows])
    return path


def _check_rows(model: models.TrainedModel, rows_path: Path, directory: Path) -> tuple[Path, dict]:
    import lightgbm
    from ctr_inference.check_rows import make_check_rows, write_check_rows

    path = directory / "check_rows.parquet"
    features = features_for(model.spec.encoding)
    booster = lightgbm.Booster(model_file=str(model.path))
    sample = np.load(rows_path, mmap_mode="r")[:256]
    rows = make_check_rows(booster, features, sample=np.asarray(sample))
    if not path.is_file():
        write_check_rows(path, rows, features)
    return path, rows.counts()


def measure_model(spec: models.ModelSpec, dataset_factory, cache_dir: Path, *, repeats: int,
                  threads: list[int], engines: tuple[str, ...], target: str) -> dict:
    """Compile and time every engine on one model; return its results entry."""
    from ctr_images.compile import run_child

    model = models.train_or_load(spec, dataset_factory, cache_dir)
    directory = cache_dir / cpu_key() / model.sha256[:16]
    directory.mkdir(parents=True, exist_ok=True)
    rows = SCORE_ROWS[spec.name.split("-")[0]]
    rows_path = _prepare_rows(dataset_factory, spec.encoding, rows, cache_dir)
    check_path, check_counts = _check_rows(model, rows_path, directory)
    reference = directory / f"lightgbm-predictions-{rows}.npy"

    entry: dict = {
        "model": spec.name, "trees": spec.trees, "leaves": spec.leaves, "encoding": spec.encoding,
        "model_sha256": model.sha256, "model_bytes": model.path.stat().st_size,
        "train_seconds": model.train_seconds, "scored_rows": rows,
        "check_rows": check_counts, "cpu_key": cpu_key(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "engines": {},
    }
    for engine in engines:
        record: dict = {}
        artifact = None
        if engine != "lightgbm":
            record = _compile(engine, model, directory, target)
            if record["status"] != "ok":
                entry["engines"][engine] = record
                continue
            artifact = Path(record["artifact"])

        logger.info("%s: timing %s on %d rows, threads %s", spec.name, engine, rows, threads)
        arguments = ["time", "--engine", engine, "--model", str(model.path), "--rows", str(rows_path),
                     "--check-rows", str(check_path), "--repeats", str(repeats),
                     "--threads", *map(str, threads)]
        if artifact is not None:
            arguments += ["--artifact", str(artifact)]
        arguments += ["--save-reference" if engine == "lightgbm" else "--reference", str(reference)]
        status, result = run_child(arguments, TIME_LIMIT, module="bench.measure")
        if status != "ok":
            logger.warning("%s: %s timing %s: %s", spec.name, engine, status, result)
            entry["engines"][engine] = dict(record, status=status, stage="predict", detail=result)
            continue
        entry["engines"][engine] = dict(record, status="ok", **result)

    _derive(entry)
    return entry


def _derive(entry: dict) -> None:
    """Add each engine's speed ratio to LightGBM and the cores that score 1e9 rows in an hour."""
    baseline = entry["engines"].get("lightgbm", {}).get("threads", {})
    for result in entry["engines"].values():
        if result.get("status") != "ok":
            continue
        result["ratio_to_lightgbm"] = {
            threads: timing["rows_per_second"] / baseline[threads]["rows_per_second"]
            for threads, timing in result["threads"].items() if threads in baseline
        }
        per_core = result["threads"].get("1", {}).get("rows_per_second")
        if per_core:
            result["rows_per_second_per_core"] = per_core
            result["cores_for_1e9_rows_per_hour"] = math.ceil(DAILY_ROWS / DEADLINE_SECONDS / per_core)


def run(*, full: bool = False, repeats: int = 5, cache_dir: Path = Path(".cache/bench"),
        output: Path = DEFAULT_RESULTS, engines: tuple[str, ...] = ENGINES,
        only: list[str] | None = None, target: str = "x86-64-v3") -> dict:
    """Measure every model (the large ones only with ``full``) and write the results JSON."""
    from ctr_inference.cpu import cpu_quota

    threads = sorted({1, cpu_quota()})
    cached: list[models.Dataset] = []

    def dataset_factory() -> models.Dataset:
        if not cached:
            cached.append(models.Dataset())
        return cached[0]

    specs = models.MODELS + (models.FULL_MODELS if full else ())
    if only:
        specs = tuple(spec for spec in specs if spec.name in only)
    started = time.perf_counter()
    previous = json.loads(output.read_text()) if output.is_file() else {}
    measured = {entry["model"]: entry for entry in previous.get("models", [])}
    for spec in specs:
        measured[spec.name] = measure_model(spec, dataset_factory, cache_dir, repeats=repeats,
                                        threads=threads, engines=engines, target=target)

    order = [spec.name for spec in models.MODELS + models.FULL_MODELS]
    results = {
        "format": 1,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "make bench-full" if full else "make bench",
        "seconds": time.perf_counter() - started,
        "machine": machine(),
        "settings": {"repeats": repeats, "threads": threads, "compile_target": target,
                     "input_order": "each engine's own (as the worker's feature_matrix builds it)"},
        "reference_model": models.REFERENCE.name,
        # Models measured in an earlier run (for example the large ones) are kept.
        "models": sorted(measured.values(), key=lambda entry: order.index(entry["model"])
                         if entry["model"] in order else len(order)),
    }
    # bench.startup and bench.e2e write their own sections; a rerun of this part keeps them.
    results.update({key: previous[key] for key in ("engine_startup", "end_to_end") if key in previous})
    output.write_text(json.dumps(results, indent=2) + "\n")
    logger.info("wrote %s after %.0f s", output, results["seconds"])
    return results
