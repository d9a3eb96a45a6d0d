"""Bake the reference model into a bundle and time the worker's engine start-up from disk.

``python -m bench.startup`` writes a bundle for the reference model with
``compile_bundle``, cached next to the model's compiled artifacts. Then it
times, in fresh processes, what the worker does before its first prediction:
``load_bundle`` (SHA-256 of every file), ``load_engine`` (CPU check, loading
the compiled form and the parity check on the check rows) and one
single-row prediction. The numbers go into ``engine_startup`` of the results
file. Start-up from S3 adds the download and is measured by ``ctr compare``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import models, runner

logger = logging.getLogger(__name__)


def bake(cache_dir: Path) -> tuple[Path, float]:
    """Return a compiled bundle of the reference model and the seconds its bake took (0 if cached)."""
    from ctr_images.compile import compile_bundle
    from ctr_inference.bundle import MODEL_FILE, library_versions, write_metadata

    model = models.train_or_load(models.REFERENCE, models.Dataset, cache_dir)
    directory = cache_dir / runner.cpu_key() / model.sha256[:16] / "bundle"
    if (directory / "bundle.json").is_file():
        return directory, 0.0

    work = directory.with_name("bundle.partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copyfile(model.path, work / MODEL_FILE)
    features = runner.features_for(models.REFERENCE.encoding)
    started = time.perf_counter()
    section = compile_bundle(work, features, engines=("lleaves",))
    seconds = time.perf_counter() - started
    write_metadata(work, {
        "model": {"name": models.REFERENCE.name, "version": "bench"},
        "features": [feature.to_dict() for feature in features],
        "libraries": library_versions(),
        "compiled": section,
    })
    work.rename(directory)
    return directory, seconds


_CHILD = """
import json, sys, time
started = time.perf_counter()
from ctr_inference.bundle import load_bundle
from ctr_inference.engines import load_engine
import numpy as np
imported = time.perf_counter()
bundle = load_bundle(sys.argv[1])
loaded = time.perf_counter()
engine = load_engine(bundle, threads=1)
ready = time.perf_counter()
engine.predict(np.zeros((1, len(bundle.features))))
first = time.perf_counter()
print(json.dumps({"engine": engine.name, "import_seconds": imported - started,
                  "load_bundle_seconds": loaded - imported, "load_engine_seconds": ready - loaded,
                  "first_prediction_seconds": first - ready, "total_seconds": first - started}))
"""


def measure(bundle_dir: Path, repeats: int = 3) -> dict:
    """Time engine start-up in ``repeats`` fresh processes; return the median run and all runs."""
    runs = []
    for _ in range(repeats):
        finished = subprocess.run([sys.executable, "-c", _CHILD, str(bundle_dir)], check=True,
                                  capture_output=True, text=True)
        runs.append(json.loads(finished.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda run: run["total_seconds"])
    return {"median": runs[len(runs) // 2], "runs": runs}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cache_dir = Path(".cache/bench")
    bundle_dir, bake_seconds = bake(cache_dir)
    result = measure(bundle_dir)
    metadata = json.loads((bundle_dir / "bundle.json").read_text())
    result.update(model=models.REFERENCE.name, bundle_bytes=sum(
        path.stat().st_size for path in bundle_dir.rglob("*") if path.is_file()),
        compiled=metadata["compiled"]["engine"],
        check_rows=metadata["compiled"]["check_rows"]["rows"])
    if bake_seconds:
        result["bake_seconds"] = bake_seconds

    results = json.loads(runner.DEFAULT_RESULTS.read_text())
    previous = results.get("engine_startup", {})
    if "bake_seconds" not in result and "bake_seconds" in previous:
        result["bake_seconds"] = previous["bake_seconds"]
    results["engine_startup"] = result
    runner.DEFAULT_RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(result["median"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
