"""Compile a bundle's model for faster scoring, keeping only a form that matches LightGBM.

``compile_bundle(bundle_dir, features)`` runs at bake time, after ``model.lgb``
is in the bundle directory and before ``write_metadata``:

1. it writes ``check_rows.parquet`` (see ``ctr_inference.check_rows``) with
   LightGBM's predictions on them;
2. for each candidate engine, a child process compiles the model into
   ``compiled/``. A second, fresh child process loads the compiled file,
   scores the check rows and times it on one thread (LightGBM is timed in
   this process on the same rows). Compiled engines can crash instead of
   raising, so a crash only rejects that candidate;
3. it keeps the fastest candidate whose predictions differ from LightGBM's by
   at most ``PARITY_TOLERANCE`` on every check row, deletes the others, and
   returns the ``compiled`` section with the bake machine's measurements.

``split_measurements`` separates that section into the part that goes into
``bundle.json``, which depends only on the model, its features, the target
and the engine versions, and the measurements (timings, the baking CPU,
error details), which vary from bake to bake and stay out of the bundle.

The compiled code targets an x86-64 micro-architecture level (default
x86-64-v3), so the artifact runs on every CPU with that level's flags, not
only on the CPU that baked it. ``target="host"`` specializes for the baking
CPU instead.

The module is also the child processes' entry point:
``python -m ctr_images.compile compile|check ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

COMPILED_DIR = "compiled"
# Every engine this module compiles.
ENGINES = ("lleaves", "tl2cgen")
# The default candidates are the engines the runtime image can load. It installs the
# ``compiled`` extra of ctr-inference, which has lleaves but not TL2cgen, so a TL2cgen
# form would fall back to LightGBM there.
DEFAULT_ENGINES = ("lleaves",)
DEFAULT_TARGET = "x86-64-v3"
ARTIFACT_SUFFIXES = {"lleaves": ".o", "tl2cgen": ".so"}

# Section fields that vary between bakes of the same model: the baking CPU and
# speeds measured on it, compile times, and error details, which can contain
# temporary paths. ``split_measurements`` keeps them out of ``bundle.json``.
MEASURED_FIELDS = ("baked_on", "rows_per_second_per_core")
MEASURED_CANDIDATE_FIELDS = ("compile_seconds", "rows_per_second_per_core", "detail")

# Child-process time limits, in seconds. Compiling a 1,000-tree model with
# 255 leaves takes minutes on 2 cores, and checking takes seconds.
COMPILE_TIMEOUT = 3600
CHECK_TIMEOUT = 900

# Rows timed per engine when ranking candidates.
SPEED_ROWS = 20_000

OK = "ok"
MISMATCH = "mismatch"
CRASHED = "crashed"
FAILED = "failed"
TIMED_OUT = "timed_out"
UNAVAILABLE = "unavailable"


class CompileError(Exception):
    """Compiling a model with one engine failed."""


def engine_version(engine: str) -> str:
    """Return the installed version of an engine's Python package, or "" when it is missing."""
    from importlib import metadata

    try:
        return metadata.version(engine)
    except metadata.PackageNotFoundError:
        return ""


def compile_artifact(engine: str, model_file: Path, artifact: Path, target: str = DEFAULT_TARGET) -> None:
    """Compile ``model_file`` with ``engine`` into ``artifact``, in this process.

    Raises:
        CompileError: the engine is unknown or its compiler failed.
    """
    artifact.parent.mkdir(parents=True, exist_ok=True)
    if artifact.exists():
        artifact.unlink()

    if engine == "lleaves":
        import lleaves

        model = lleaves.Model(model_file=str(model_file))
        if target == "host":
            model.compile(cache=str(artifact))
        else:
            # Empty features: only what the named level implies, none of the host's extras.
            model.compile(cache=str(artifact), target_cpu=target, target_cpu_features="")
    elif engine == "tl2cgen":
        import tl2cgen
        import treelite

        model = treelite.frontend.load_lightgbm_model(str(model_file))
        march = "native" if target == "host" else target
        threads = os.cpu_count() or 1
        # Several translation units let GCC compile a large forest on every core.
        units = max(threads, model.num_tree // 100)
        tl2cgen.export_lib(model, toolchain="gcc", libpath=str(artifact),
                           params={"parallel_comp": units}, nthread=threads,
                           options=[f"-march={march}"])
    else:
        raise CompileError(f"unknown engine {engine!r}: expected one of {sorted(ARTIFACT_SUFFIXES)}")

    if not artifact.is_file():
        raise CompileError(f"{engine} finished without writing {artifact}")


def _load_check_matrix(path: Path):
    import pyarrow.parquet as pq
    from ctr_inference.check_rows import EXPECTED_COLUMN, KIND_COLUMN, CheckRows

    table = pq.read_table(path)
    names = [name for name in table.column_names if name not in (KIND_COLUMN, EXPECTED_COLUMN)]
    matrix = np.column_stack([table.column(name).to_numpy(zero_copy_only=False) for name in names])
    kinds = np.array(table.column(KIND_COLUMN).to_pylist(), dtype=object)
    expected = table.column(EXPECTED_COLUMN).to_numpy(zero_copy_only=False)
    return CheckRows(matrix=np.ascontiguousarray(matrix, dtype=np.float64), kinds=kinds, expected=expected)


def rows_per_second(predict, matrix: np.ndarray, repeats: int = 3) -> float:
    """Return the median rows per second of ``predict(matrix)`` over ``repeats`` runs after a warm-up."""
    predict(matrix[: min(1000, matrix.shape[0])])
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(matrix)
        timings.append(time.perf_counter() - started)
    return matrix.shape[0] / float(np.median(timings))


def speed_rows(rows) -> np.ndarray:
    """Return the rows that candidates are timed on: the ordinary check rows, repeated."""
    from ctr_inference.check_rows import ORDINARY

    ordinary = rows.matrix[rows.kinds == ORDINARY]
    return np.asfortranarray(np.resize(ordinary, (SPEED_ROWS, ordinary.shape[1])))


def check_artifact(engine: str, model_file: Path, artifact: Path, check_rows: Path) -> dict:
    """Score the check rows with a compiled artifact and time it on one thread, in this process.

    LightGBM is not imported here (it takes seconds), because the check rows
    carry its predictions.
    """
    from ctr_inference.check_rows import max_abs_diff_by_kind
    from ctr_inference.engines import COMPILED_ENGINES

    rows = _load_check_matrix(check_rows)
    loaded = COMPILED_ENGINES[engine](model_file, artifact, 1)
    predictions = loaded.predict(rows.matrix)
    # NaN or infinite differences become None, because bundle.json is strict JSON.
    by_kind = {kind: (value if np.isfinite(value) else None)
               for kind, value in max_abs_diff_by_kind(rows, predictions, rows.expected).items()}
    worst = None if None in by_kind.values() else max(by_kind.values(), default=0.0)
    return {
        "max_abs_diff": worst,
        "max_abs_diff_by_kind": by_kind,
        "rows": len(rows),
        "rows_per_second_per_core": rows_per_second(loaded.predict, speed_rows(rows)),
    }


def run_child(arguments: list[str], timeout: float, module: str = "ctr_images.compile") -> tuple[str, dict | str]:
    """Run ``python -m MODULE ARGUMENTS``; return (status, JSON result or error detail).

    The status is ``ok``, ``crashed`` (killed by a signal), ``failed`` (non-zero
    exit or no JSON on the last stdout line) or ``timed_out``.
    """
    command = [sys.executable, "-m", module, *arguments]
    # A session of its own lets a timeout end the compilers the child started, too.
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as child:
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return TIMED_OUT, f"no result after {timeout:.0f} s"
    finished = subprocess.CompletedProcess(command, child.returncode, stdout, stderr)
    if finished.returncode < 0:
        name = signal.Signals(-finished.returncode).name
        return CRASHED, f"killed by {name}; stderr: {_tail(finished.stderr)}"
    if finished.returncode != 0:
        return FAILED, f"exit code {finished.returncode}; stderr: {_tail(finished.stderr)}"
    try:
        return OK, json.loads(finished.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return FAILED, f"no JSON result on stdout; stderr: {_tail(finished.stderr)}"


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def compile_candidate(engine: str, model_file: Path, artifact: Path, check_rows: Path,
                      target: str = DEFAULT_TARGET, tolerance: float | None = None) -> dict:
    """Compile and check one engine in two child processes; return the candidate record.

    The record's ``status`` is ``ok`` only when both children succeeded and the
    largest difference from LightGBM is within ``tolerance``.
    """
    from ctr_inference.engines import PARITY_TOLERANCE

    tolerance = PARITY_TOLERANCE if tolerance is None else tolerance
    record: dict = {"engine": engine, "engine_version": engine_version(engine)}
    if not record["engine_version"]:
        return dict(record, status=UNAVAILABLE, detail=f"the Python package {engine} is not installed")

    started = time.perf_counter()
    status, result = run_child(
        ["compile", "--engine", engine, "--model", str(model_file), "--artifact", str(artifact),
         "--target", target], COMPILE_TIMEOUT)
    record["compile_seconds"] = round(time.perf_counter() - started, 2)
    if status != OK:
        logger.warning("%s compile %s: %s", engine, status, result)
        return dict(record, status=status, stage="compile", detail=result)
    record["size_bytes"] = artifact.stat().st_size

    status, result = run_child(
        ["check", "--engine", engine, "--model", str(model_file), "--artifact", str(artifact),
         "--check-rows", str(check_rows)], CHECK_TIMEOUT)
    if status != OK:
        logger.warning("%s check %s: %s", engine, status, result)
        return dict(record, status=status, stage="check", detail=result)
    record.update(result)
    worst = result["max_abs_diff"]
    if worst is None or worst > tolerance:
        difference = "NaN or infinite" if worst is None else f"{worst:.3g}"
        return dict(record, status=MISMATCH,
                    detail=f"max abs difference {difference} exceeds {tolerance:g}")
    return dict(record, status=OK)


def bundle_model_file(bundle_dir: Path) -> Path:
    """Return the path of the bundle's ``model.lgb``.

    Raises:
        FileNotFoundError: the bundle directory has no ``model.lgb``.
    """
    from ctr_inference.bundle import MODEL_FILE

    model_file = Path(bundle_dir) / MODEL_FILE
    if not model_file.is_file():
        raise FileNotFoundError(f"no {MODEL_FILE} in {bundle_dir}: write the model before compiling it")
    return model_file


def compile_bundle(
    bundle_dir: str | os.PathLike,
    features: list | None = None,
    *,
    sample: np.ndarray | None = None,
    engines: tuple[str, ...] = DEFAULT_ENGINES,
    target: str = DEFAULT_TARGET,
) -> dict:
    """Write check rows and the fastest matching compiled form into a bundle directory.

    Args:
        bundle_dir: a bundle directory that already contains ``model.lgb``.
        features: the bundle's features (``Feature`` objects or their dicts) in
            model column order; None takes the model's feature names as numeric.
        sample: optional real feature rows for the check rows' ordinary kind.
        engines: candidate engines, tried in this order.
        target: ``host`` or an x86-64 level from ``ctr_inference.cpu.TARGET_FLAGS``.

    Returns:
        The ``compiled`` section with the measurements of this bake; pass it to
        ``split_measurements`` for the part that ``bundle.json`` stores. Its
        ``engine`` is None when no candidate matched LightGBM, and
        ``candidates`` records every attempt.

    Raises:
        UnknownTargetError: ``target`` is not known.
        FileNotFoundError: the bundle directory has no ``model.lgb``.
    """
    import lightgbm
    from ctr_inference.bundle import sha256_file
    from ctr_inference.check_rows import CHECK_ROWS_FILE, make_check_rows, write_check_rows
    from ctr_inference.contract import Feature
    from ctr_inference.cpu import read_cpuinfo, required_flags

    bundle_dir = Path(bundle_dir)
    model_file = bundle_model_file(bundle_dir)
    cpu = read_cpuinfo()
    required = required_flags(target, cpu)

    booster = lightgbm.Booster(model_file=str(model_file))
    if features is None:
        features = [Feature(name=name) for name in booster.feature_name()]
    features = [item if isinstance(item, Feature) else Feature.from_dict(item) for item in features]
    rows = make_check_rows(booster, features, sample=sample)
    check_path = bundle_dir / CHECK_ROWS_FILE
    write_check_rows(check_path, rows, features)
    logger.info("wrote %d check rows to %s: %s", len(rows), check_path, rows.counts())
    lightgbm_speed = rows_per_second(lambda matrix: booster.predict(matrix, num_threads=1),
                                     speed_rows(rows))

    compiled_dir = bundle_dir / COMPILED_DIR
    work_dir = compiled_dir / ".candidates"
    work_dir.mkdir(parents=True, exist_ok=True)
    candidates = []
    for engine in engines:
        artifact = work_dir / f"model.{engine}{ARTIFACT_SUFFIXES.get(engine, '')}"
        candidate = compile_candidate(engine, model_file, artifact, check_path, target)
        logger.info("candidate %s: %s %s", engine, candidate["status"], candidate.get("detail", ""))
        candidates.append(candidate)

    passing = [c for c in candidates if c["status"] == OK]
    best = max(passing, key=lambda c: c["rows_per_second_per_core"], default=None)
    section: dict = {
        "engine": None,
        "target": {"cpu": target, "arch": cpu.arch, "required_flags": required},
        "baked_on": {"cpu_model": cpu.model_name, "instruction_flags": cpu.instruction_flags()},
        "check_rows": {"file": CHECK_ROWS_FILE, "sha256": sha256_file(check_path),
                       "rows": len(rows), "kinds": rows.counts()},
        "candidates": candidates,
        # Rows per second on one thread of the bake machine, F-ordered input.
        "rows_per_second_per_core": {"lightgbm": lightgbm_speed},
    }
    if best is not None:
        name = f"model.{best['engine']}{ARTIFACT_SUFFIXES[best['engine']]}"
        final = compiled_dir / name
        os.replace(work_dir / name, final)
        section.update(
            engine=best["engine"],
            engine_version=best["engine_version"],
            file=f"{COMPILED_DIR}/{name}",
            sha256=sha256_file(final),
            size_bytes=final.stat().st_size,
            parity={"max_abs_diff": best["max_abs_diff"],
                    "max_abs_diff_by_kind": best["max_abs_diff_by_kind"]},
        )
        section["rows_per_second_per_core"][best["engine"]] = best["rows_per_second_per_core"]
    shutil.rmtree(work_dir, ignore_errors=True)
    if best is None and compiled_dir.is_dir() and not any(compiled_dir.iterdir()):
        compiled_dir.rmdir()
    logger.info("compiled form: %s", section["engine"] or "none; the worker will use LightGBM")
    return section


def split_measurements(section: dict) -> tuple[dict, dict]:
    """Split a ``compile_bundle`` section into the ``bundle.json`` part and the measurements.

    The measurements are the fields in ``MEASURED_FIELDS`` and, per candidate,
    ``MEASURED_CANDIDATE_FIELDS``. They change from run to run or from machine
    to machine, so keeping them out of ``bundle.json`` keeps a rebake's bundle
    byte-identical.
    """
    reproducible = {key: value for key, value in section.items() if key not in MEASURED_FIELDS}
    measurements = {key: section[key] for key in MEASURED_FIELDS if key in section}

    reproducible["candidates"] = []
    measurements["candidates"] = []
    for candidate in section.get("candidates", []):
        bundle_fields = {key: value for key, value in candidate.items() if key not in MEASURED_CANDIDATE_FIELDS}
        measured = {key: candidate[key] for key in MEASURED_CANDIDATE_FIELDS if key in candidate}
        reproducible["candidates"].append(bundle_fields)
        measurements["candidates"].append({"engine": candidate["engine"], **measured})
    return reproducible, measurements


def _child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctr_images.compile",
                                     description="Compile or check one engine (child process of compile_bundle).")
    sub = parser.add_subparsers(dest="step", required=True)
    for step in ("compile", "check"):
        command = sub.add_parser(step)
        command.add_argument("--engine", required=True, choices=sorted(ARTIFACT_SUFFIXES))
        command.add_argument("--model", type=Path, required=True, help="LightGBM model file")
        command.add_argument("--artifact", type=Path, required=True, help="compiled file")
        if step == "compile":
            command.add_argument("--target", default=DEFAULT_TARGET, help="host or an x86-64 level")
        else:
            command.add_argument("--check-rows", type=Path, required=True, help="check_rows.parquet")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    if args.step == "compile":
        started = time.perf_counter()
        compile_artifact(args.engine, args.model, args.artifact, args.target)
        result = {"seconds": time.perf_counter() - started, "machine": platform.machine()}
    else:
        result = check_artifact(args.engine, args.model, args.artifact, args.check_rows)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main())
