"""End-to-end benchmark: worker processes scoring partitions from the local S3 server.

``python -m bench.e2e`` bakes (or reuses) the reference model's bundle with
its compiled form, writes Criteo-shaped feature partitions of the 128 MB
class, and starts the moto server on 127.0.0.1 with the scoring queue. For
each scenario it starts the worker processes, waits until each one is
receiving, dispatches one run and polls for its ``_SUCCESS`` marker every
0.25 s. The measured span runs from the dispatch to the marker, so start-up
is not part of it, and the first download and the last upload are.

Scenarios:

- 1 worker with prefetch (the default worker);
- 1 worker with ``PREFETCH=0``, the sequential path, to show what the
  overlap of download, decode, scoring and upload is worth;
- 2 workers with prefetch, one scoring thread each.

Every worker scores with one thread, so rows per second per core is the
run's rows per second divided by the number of workers. The in-memory rate
of the same engine on the same partition, in one process and in two at once,
is measured in the same run, and so is LightGBM's own ``predict``.

The moto server, the workers' download, decode and upload threads and the
benchmark itself share the machine's cores with scoring. On a 2-core machine
that costs the 2-worker scenario a measurable share of its rate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import data, models, runner, startup

logger = logging.getLogger(__name__)

# 2.8 million rows of 39 frequency-encoded features come to about 128 MB of
# Parquet; the results file records the actual size.
PARTITION_ROWS = 2_800_000
PARTITIONS_PER_WORKER = 3
SCENARIOS = (
    {"name": "1 worker, prefetch", "workers": 1, "prefetch": True},
    {"name": "1 worker, sequential", "workers": 1, "prefetch": False},
    {"name": "2 workers, prefetch", "workers": 2, "prefetch": True},
)
# Rows of the first partition that in-memory scoring is timed on: about 10 s a
# run for each engine (lleaves at about 45,000 rows/s, LightGBM at about 4,700).
COMPILED_ROWS = 500_000
LIGHTGBM_ROWS = 50_000
RUN_TIMEOUT = 1800
DT = "2026-01-01"


def write_partitions(cache_dir: Path, count: int, rows: int) -> list[Path]:
    """Write ``count`` partitions of ``rows`` rows each (cached), frequency-encoded like the reference model's data."""
    folder = cache_dir / "e2e" / f"partitions-{models.DATA_SEED}-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"part-{index:05d}.parquet" for index in range(count)]
    missing = [index for index, path in enumerate(paths) if not path.is_file()]
    if not missing:
        return paths

    shape = data.make_shape(models.DATA_SEED)
    train = data.draw(shape, models.TRAIN_ROWS, seed=models.DATA_SEED + 1, shape_seed=models.DATA_SEED)
    counts = data.category_counts(train.codes)
    for index in missing:
        started = time.perf_counter()
        draw = data.draw(shape, rows, seed=models.DATA_SEED + 100 + index, shape_seed=models.DATA_SEED)
        matrix = data.frequency_matrix(draw, counts)
        columns = {"row_id": pa.array(np.arange(index * rows, (index + 1) * rows, dtype=np.int64))}
        for position, name in enumerate(data.FEATURE_NAMES):
            values = matrix[:, position]
            # Missing values are nulls in the feature job's Parquet, not NaN.
            columns[name] = pa.array(values, mask=np.isnan(values))
        partial = paths[index].with_suffix(".partial")
        pq.write_table(pa.table(columns), partial)
        partial.rename(paths[index])
        logger.info("wrote partition %d of %d (%d rows, %.0f MB) in %.1f s", index + 1, count, rows,
                    paths[index].stat().st_size / 1e6, time.perf_counter() - started)
    return paths


_IN_MEMORY = """
import json, sys, time
import numpy as np
import pyarrow.parquet as pq
from ctr_inference.bundle import load_bundle
from ctr_inference.engines import LightGBMEngine, load_engine
from ctr_inference.scorer import Scorer
bundle = load_bundle(sys.argv[1])
table = pq.read_table(sys.argv[2])
engine = LightGBMEngine(bundle, 1) if sys.argv[3] == "lightgbm" else load_engine(bundle, threads=1)
rows = int(sys.argv[4])
if rows:
    table = table.slice(0, rows)
scorer = Scorer(bundle, engine=engine)
scorer.predict(table.slice(0, 1000))
timings = []
for _ in range(int(sys.argv[5])):
    started = time.perf_counter()
    scorer.predict(table)
    timings.append(time.perf_counter() - started)
print(json.dumps({"engine": engine.name, "rows": table.num_rows, "seconds": timings}))
"""


def in_memory(bundle_dir: Path, partition: Path, engine: str, rows: int, repeats: int,
              processes: int = 1) -> dict:
    """Time ``Scorer.predict`` on one partition in ``processes`` concurrent processes of one thread each.

    The timed call builds the feature matrix from the Arrow table and scores it, as the worker does.
    """
    children = [subprocess.Popen([sys.executable, "-c", _IN_MEMORY, str(bundle_dir), str(partition), engine,
                                  str(rows), str(repeats)], stdout=subprocess.PIPE, text=True)
                for _ in range(processes)]
    results = []
    for child in children:
        stdout, _ = child.communicate(timeout=RUN_TIMEOUT)
        if child.returncode:
            raise RuntimeError(f"in-memory timing of {engine} failed with exit code {child.returncode}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    per_process = [result["rows"] / statistics.median(result["seconds"]) for result in results]
    return {"engine": results[0]["engine"], "processes": processes, "rows": results[0]["rows"],
            "repeats": repeats, "rows_per_second_per_core": statistics.mean(per_process)}


class Infra:
    """The moto server with the benchmark's buckets and queue."""

    def __init__(self, log_dir: Path):
        from ctr.services import MotoServer

        self.server = MotoServer(None, log_dir)

    def __enter__(self) -> Self:
        import boto3

        from ctr import local_infra
        from ctr.services import aws_environment

        self.server.start()
        self.environment = aws_environment(self.server.url)
        # compare_sources starts child processes that find the server through the environment.
        os.environ.update(self.environment)
        self.s3 = boto3.client("s3")
        self.sqs = boto3.client("sqs")
        self.resources = local_infra.provision(self.s3, self.sqs, prefix="bench", visibility_timeout=300)
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()

    def upload(self, paths: list[Path]) -> int:
        """Upload the partitions under ``features/dt=DT/``; return their total bytes."""
        total = 0
        for path in paths:
            self.s3.upload_file(str(path), self.resources.features_bucket, f"features/dt={DT}/{path.name}")
            total += path.stat().st_size
        return total

    def clear(self, bucket: str, prefix: str) -> None:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def _start_workers(infra: Infra, bundle_dir: Path, count: int, prefetch: bool, log_dir: Path) -> list:
    workers = []
    for index in range(count):
        env = dict(os.environ, **infra.environment,
                   QUEUE_URL=infra.resources.queue_url, MODEL_SOURCE="baked", BUNDLE_PATH=str(bundle_dir),
                   PREDICTIONS_BUCKET=infra.resources.predictions_bucket, WAIT_TIME_SECONDS="1",
                   VISIBILITY_TIMEOUT_SECONDS="300", HEARTBEAT_SECONDS="30", SCORING_THREADS="1",
                   METRICS_PORT="0", METRICS_HOST="127.0.0.1", LOG_FORMAT="json", PYTHONUNBUFFERED="1",
                   PREFETCH="1" if prefetch else "0", WORKER_NAME=f"bench-{index}",
                   CACHE_DIR=str(log_dir / f"cache-{index}"))
        log = open(log_dir / f"worker-{index}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen([sys.executable, "-m", "ctr_inference.worker"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        workers.append((process, log, log_dir / f"worker-{index}.log"))
    deadline = time.monotonic() + 300
    for process, _, path in workers:
        while "receiving from" not in path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; its log {path} ends with:\n"
                                   + "\n".join(path.read_text().splitlines()[-10:]))
            time.sleep(0.2)
    return workers


def _stop_workers(workers: list) -> None:
    for process, log, _ in workers:
        if process.poll() is None:
            process.terminate()
    for process, log, _ in workers:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def run_scenario(infra: Infra, bundle_dir: Path, scenario: dict, partitions: list[Path], work_dir: Path) -> dict:
    """Score ``partitions`` with the scenario's workers; return rows per second and per core."""
    from ctr_inference.dispatch import dispatch
    from ctr_inference.runs import RunLocation, list_run, read_output_stats

    bundle = json.loads((bundle_dir / "bundle.json").read_text())["model"]
    resources = infra.resources
    infra.clear(resources.features_bucket, "features/")
    infra.clear(resources.predictions_bucket, "")
    input_bytes = infra.upload(partitions)
    log_dir = work_dir / scenario["name"].replace(" ", "-").replace(",", "")
    log_dir.mkdir(parents=True)

    workers = _start_workers(infra, bundle_dir, scenario["workers"], scenario["prefetch"], log_dir)
    try:
        started = time.time()
        result = dispatch(infra.s3, infra.sqs, resources.queue_url, resources.features_bucket,
                          resources.predictions_bucket, DT, bundle["name"], bundle["version"])
        location = RunLocation.of_run_id(resources.predictions_bucket, result.run_id)
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            listing = list_run(infra.s3, location)
            if "_SUCCESS" in listing.markers or "_FAILED" in listing.markers:
                finished = time.time()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {result.run_id} did not finish in {RUN_TIMEOUT} s")
            time.sleep(0.25)
        if "_FAILED" in listing.markers:
            raise RuntimeError(f"run {result.run_id} failed; worker logs are in {log_dir}")
    finally:
        _stop_workers(workers)

    stats = list(read_output_stats(infra.s3, location, sorted(listing.outputs)).values())
    rows = sum(item.rows for item in stats)
    span = finished - started
    engines = sorted({item.engine for item in stats})
    rate = rows / span
    logger.info("%s: %d rows in %.1f s, %.0f rows/s (%s)", scenario["name"], rows, span, rate, ", ".join(engines))
    return dict(scenario, partitions=len(partitions), rows=rows, input_bytes=input_bytes,
                seconds=round(span, 2), engines=engines, rows_per_second=rate,
                rows_per_second_per_core=rate / scenario["workers"])


STARTUP_ROWS = 10_000
STARTUP_REPEATS = 3


def startup_times(infra: Infra, bundle_dir: Path, partition: Path, work_dir: Path) -> dict:
    """Time start-up to first prediction of the baked and the S3 source with ``ctr compare``'s code.

    Each source runs in a fresh process, as a new pod would; the S3 source
    downloads the bundle into an empty cache first. The partition is a
    10,000-row slice, so the time is start-up, not scoring.
    """
    from ctr_inference.compare import compare_sources
    from ctr_inference.model_source import bundle_uri, upload_bundle

    model = json.loads((bundle_dir / "bundle.json").read_text())["model"]
    uri = bundle_uri(infra.resources.model_store_uri, model["name"], model["version"])
    upload_bundle(bundle_dir, uri, infra.s3)
    small = work_dir / "startup.parquet"
    pq.write_table(pq.read_table(partition).slice(0, STARTUP_ROWS), small)
    key = "features/dt=2026-01-02/part-00000.parquet"
    infra.s3.upload_file(str(small), infra.resources.features_bucket, key)

    runs = []
    for repeat in range(STARTUP_REPEATS):
        report = compare_sources(str(bundle_dir), uri, [f"s3://{infra.resources.features_bucket}/{key}"],
                                 work_dir / f"compare-{repeat}")
        if report["max_abs_difference"] != 0.0:
            raise RuntimeError(f"baked and S3 sources differ by {report['max_abs_difference']}")
        runs.append({source: {name: item[name] for name in ("startup_seconds", "load_seconds", "engine")}
                     for source, item in report["sources"].items()})
    median = {}
    for source in runs[0]:
        median[source] = {"engine": runs[0][source]["engine"]}
        for name in ("startup_seconds", "load_seconds"):
            median[source][name] = statistics.median(run[source][name] for run in runs)
    logger.info("start-up to first prediction: baked %.2f s, S3 %.2f s", median["baked"]["startup_seconds"],
                median["s3"]["startup_seconds"])
    return {"median": median, "runs": runs, "rows": STARTUP_ROWS}


def run(cache_dir: Path, rows: int, per_worker: int, repeats: int, output: Path) -> dict:
    bundle_dir, _ = startup.bake(cache_dir)
    partition_count = max(scenario["workers"] for scenario in SCENARIOS) * per_worker
    paths = write_partitions(cache_dir, partition_count, rows)

    logger.info("timing in-memory scoring on %s", paths[0].name)
    memory = {
        "compiled_1": in_memory(bundle_dir, paths[0], "compiled", COMPILED_ROWS, repeats),
        "compiled_2": in_memory(bundle_dir, paths[0], "compiled", COMPILED_ROWS, repeats,
                                processes=2),
        "lightgbm_1": in_memory(bundle_dir, paths[0], "lightgbm", LIGHTGBM_ROWS, repeats),
    }
    scenarios = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as scratch, Infra(Path(scratch)) as infra:
        for scenario in SCENARIOS:
            chosen = paths[: scenario["workers"] * per_worker]
            scenarios.append(run_scenario(infra, bundle_dir, scenario, chosen, Path(scratch)))
        started = startup_times(infra, bundle_dir, paths[0], Path(scratch))

    lightgbm = memory["lightgbm_1"]["rows_per_second_per_core"]
    for entry in scenarios:
        reference = memory["compiled_1" if entry["workers"] == 1 else "compiled_2"]["rows_per_second_per_core"]
        entry["share_of_in_memory"] = entry["rows_per_second_per_core"] / reference
        entry["ratio_to_lightgbm"] = entry["rows_per_second_per_core"] / lightgbm

    result = {"model": models.REFERENCE.name, "partition_rows": rows,
              "partition_bytes": round(statistics.mean(path.stat().st_size for path in paths)),
              "in_memory": memory, "scenarios": scenarios, "startup": started, "machine": runner.machine()}
    results = json.loads(output.read_text()) if output.is_file() else {}
    results["end_to_end"] = result
    output.write_text(json.dumps(results, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=PARTITION_ROWS, help="rows per partition")
    parser.add_argument("--partitions-per-worker", type=int, default=PARTITIONS_PER_WORKER)
    parser.add_argument("--repeats", type=int, default=5, help="in-memory timed runs (median)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/bench"))
    parser.add_argument("--output", type=Path, default=runner.DEFAULT_RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(args.cache_dir, args.rows, args.partitions_per_worker, args.repeats, args.output)
    print(json.dumps({entry["name"]: {key: entry[key] for key in ("rows_per_second_per_core",
                                                                   "share_of_in_memory", "ratio_to_lightgbm")}
                      for entry in result["scenarios"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
