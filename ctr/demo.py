"""The main job on one machine: logs in, trained and registered model, baked image, scored partitions out.

Every step is the library function that production runs. Only the services
are local stand-ins (moto for S3 and SQS, MLflow with SQLite, an OCI image
layout for the registry, worker processes for the Deployment). Whatever a
person inspects afterwards lives under the work directory (``.ctr/`` by
default), because the S3/SQS emulator keeps nothing after it stops.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ctr_inference.errors import CtrError

from ctr import local_infra
from ctr.services import MlflowServer, MotoServer, aws_environment
from ctr.tracking import ensure_local_experiment

logger = logging.getLogger(__name__)

MODEL_NAME = "ctr-criteo"
EXPERIMENT = "ctr-criteo"


@dataclass
class DemoConfig:
    """Settings of one demo run; the CLI fills these from its options."""

    workdir: Path = Path(".ctr")
    train_logs: list[str] = field(default_factory=list)
    score_logs: list[str] = field(default_factory=list)
    rows: int = 1_000_000
    train_fraction: float = 0.8
    dt: str = field(default_factory=lambda: datetime.date.today().isoformat())
    workers: int = 2
    partitions: int = 8
    num_boost_round: int = 100
    num_leaves: int = 31
    min_count: int = 5
    max_malformed_fraction: float = 0.01
    moto_port: int | None = None
    mlflow_port: int | None = None
    # Use running services instead of starting local ones (tests share theirs).
    s3_endpoint: str | None = None
    mlflow_tracking_uri: str | None = None
    timeout: float = 900.0
    seed: int = 7


def _open_text(path: str):
    return gzip.open(path, "rt", encoding="utf-8", newline="") if path.endswith(".gz") else open(
        path, encoding="utf-8", newline="")


def split_logs(source: str, fraction: float, train_path: Path, score_path: Path) -> tuple[Path, Path]:
    """Split one log file by line order: the earlier ``fraction`` to train, the rest to score.

    Raises:
        CtrError: the file is missing, empty or too short to split.
    """
    if not os.path.exists(source):
        raise CtrError(f"log file {source} does not exist")
    with _open_text(source) as handle:
        total = sum(1 for _ in handle)
    cut = int(total * fraction)
    if total == 0:
        raise CtrError(f"log file {source} is empty")
    if cut == 0 or cut == total:
        raise CtrError(f"log file {source} has {total} lines, too few to split at {fraction:.0%}")
    train_path.parent.mkdir(parents=True, exist_ok=True)
    with _open_text(source) as handle, open(train_path, "w") as train, open(score_path, "w") as score:
        for number, line in enumerate(handle):
            (train if number < cut else score).write(line)
    logger.info("split %s: %d lines to train, %d to score", source, cut, total - cut)
    return train_path, score_path


def prepare_logs(config: DemoConfig, data_dir: Path) -> tuple[list[str], list[str]]:
    """Return the training and scoring log files: given, split from one file, or generated."""
    if config.train_logs and config.score_logs:
        return config.train_logs, config.score_logs
    if config.train_logs:
        if len(config.train_logs) != 1:
            raise CtrError("give --score-logs, or exactly one --train-logs file to split")
        train, score = split_logs(config.train_logs[0], config.train_fraction,
                                  data_dir / "train.tsv", data_dir / "score.tsv")
        return [str(train)], [str(score)]
    if config.score_logs:
        raise CtrError("--score-logs needs --train-logs: the model must be trained first")

    from ctr_training import synth

    train_rows = int(config.rows * config.train_fraction)
    train = synth.write_logs(data_dir / "generated-train.tsv", train_rows, seed=config.seed)
    score = synth.write_logs(data_dir / "generated-score.tsv", config.rows - train_rows, seed=config.seed + 1)
    return [str(train)], [str(score)]


def upload_directory(s3, directory: Path, bucket: str, prefix: str, pattern: str = "*") -> list[str]:
    """Upload files of a local directory to ``s3://bucket/prefix`` and return their URIs."""
    uris = []
    for path in sorted(directory.glob(pattern)):
        key = f"{prefix.rstrip('/')}/{path.name}"
        s3.upload_file(str(path), bucket, key)
        uris.append(f"s3://{bucket}/{key}")
    return uris


class StepClock:
    """Prints each numbered step of the demo when it starts and its wall time when it ends."""

    def __init__(self, total: int):
        self.total = total
        self.seconds: dict[str, float] = {}
        self._running: tuple[int, str, float] | None = None

    def start(self, name: str, description: str) -> None:
        """End the running step, if any, and start the next one."""
        self.finish()
        number = len(self.seconds) + 1
        print(f"[{number}/{self.total}] {description}", file=sys.stderr)
        self._running = (number, name, time.monotonic())

    def finish(self) -> None:
        """End the running step and print its wall time, as ``[1/6] features: 234 s``."""
        if self._running is None:
            return
        number, name, started = self._running
        seconds = time.monotonic() - started
        self.seconds[name] = round(seconds, 1)
        print(f"[{number}/{self.total}] {name}: {seconds:.0f} s", file=sys.stderr)
        self._running = None


def start_workers(count: int, env: dict, log_dir: Path) -> list[subprocess.Popen]:
    """Start ``count`` worker processes, the local stand-in for the Deployment's pods."""
    processes = []
    for index in range(count):
        worker_env = dict(env, WORKER_NAME=f"worker-{index}", CACHE_DIR=str(log_dir.parent / "cache" / f"worker-{index}"))
        # The child keeps its own copy of the log's file descriptor, so this one can close.
        with open(log_dir / f"worker-{index}.log", "ab") as log:
            processes.append(subprocess.Popen([sys.executable, "-m", "ctr_inference.worker"], env=worker_env,
                                              stdout=log, stderr=subprocess.STDOUT))
        logger.info("started worker-%d (pid %d)", index, processes[-1].pid)
    return processes


def stop_workers(processes: list[subprocess.Popen], timeout: float = 60.0) -> None:
    """Send SIGTERM to the workers and wait for them to drain and exit."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("worker pid %d did not exit within %.0f s, killing it", process.pid, timeout)
            process.kill()
            process.wait()


def wait_for_outputs(s3, bucket: str, prefix: str, expected: int, processes, timeout: float) -> float:
    """Show a progress bar until ``expected`` outputs exist under the prefix; return the seconds taken.

    Raises:
        CtrError: every worker exited, or ``timeout`` passed, before the run completed.
    """
    from ctr_inference.dispatch import list_keys
    from tqdm import tqdm

    started = time.monotonic()
    with tqdm(total=expected, unit="partition", desc="scoring", file=sys.stderr) as bar:
        while True:
            done = len([k for k in list_keys(s3, bucket, prefix) if k.endswith(".parquet")])
            bar.update(done - bar.n)
            if done >= expected:
                return time.monotonic() - started
            if all(p.poll() is not None for p in processes):
                raise CtrError(f"all workers exited with {done} of {expected} partitions scored; see the worker logs")
            if time.monotonic() - started > timeout:
                raise CtrError(f"scoring timed out after {timeout:.0f} s with {done} of {expected} partitions scored")
            time.sleep(0.5)


def preflight(config: DemoConfig) -> None:
    """Check what would otherwise fail minutes into the run: Java, the input files, the ports.

    Raises:
        CtrError: with one message naming the problem.
    """
    from ctr_training.features import check_inputs, check_java

    from ctr.services import check_port_free

    check_java()
    if config.train_logs or config.score_logs:
        check_inputs(config.train_logs + config.score_logs)
    if config.moto_port and not config.s3_endpoint:
        check_port_free(config.moto_port, "the S3/SQS emulator")
    if config.mlflow_port and not config.mlflow_tracking_uri:
        check_port_free(config.mlflow_port, "MLflow")


def run_demo(config: DemoConfig) -> dict:
    """Run the main job end to end and return the run report (also written as JSON).

    Services that ``config`` does not point at are started on loopback and
    stopped at the end, also on error and on Ctrl-C.
    """
    preflight(config)
    workdir = config.workdir.resolve()
    for sub in ("logs", "data", "features", "bundles", "images", "predictions", "reports", "cache"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        s3_endpoint = config.s3_endpoint
        if not s3_endpoint:
            s3_endpoint = stack.enter_context(MotoServer(config.moto_port, workdir / "logs")).url
        mlflow_uri = config.mlflow_tracking_uri
        if not mlflow_uri:
            mlflow_uri = stack.enter_context(
                MlflowServer(config.mlflow_port, workdir / "logs", workdir / "mlflow")).url
        aws = aws_environment(s3_endpoint)
        os.environ.update(aws)
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
        if not config.mlflow_tracking_uri:
            # A file:// artifact location lets `ctr image bake` read the artifacts after the server stops.
            ensure_local_experiment(EXPERIMENT, mlflow_uri, workdir)
        return _run_steps(config, workdir, aws, mlflow_uri, stack)


def _run_steps(config: DemoConfig, workdir: Path, aws: dict, mlflow_url: str, stack) -> dict:
    import boto3
    from ctr_images.bake import bake
    from ctr_inference.dispatch import dispatch
    from ctr_inference.model_source import bundle_uri, upload_bundle
    from ctr_training import criteo
    from ctr_training.features import run_feature_job, spark_session
    from ctr_training.train import train_and_register

    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    resources = local_infra.provision(s3, sqs)
    train_logs, score_logs = prepare_logs(config, workdir / "data")
    for path in train_logs + score_logs:
        s3.upload_file(path, resources.raw_bucket, f"raw/dt={config.dt}/{Path(path).name}")

    steps = StepClock(6)
    steps.start("features", "feature job on the training logs (Spark local mode)")
    from pyspark.sql import SparkSession

    shared_session = SparkSession.getActiveSession()
    spark = spark_session()
    if shared_session is None:
        stack.callback(spark.stop)
    spark.sparkContext.setLogLevel("ERROR")
    train_features = run_feature_job(
        spark, train_logs, workdir / "features" / "train", encoding_path=workdir / "features" / "encoding.parquet",
        fit=True, min_count=config.min_count, partitions=config.partitions,
        max_malformed_fraction=config.max_malformed_fraction,
    )
    upload_directory(s3, workdir / "features" / "train", resources.features_bucket,
                     f"training-features/dt={config.dt}", "*.parquet")

    steps.start("training", "LightGBM training, logged and registered in MLflow")
    trained = train_and_register(
        workdir / "features" / "train", train_features.encoding_path, model_name=MODEL_NAME,
        experiment=EXPERIMENT, categorical=criteo.CATEGORICAL_COLUMNS,
        lgb_params={"num_leaves": config.num_leaves}, num_boost_round=config.num_boost_round,
        extra_params={"min_count": config.min_count, "train_rows_in": train_features.rows},
    )

    steps.start("bake", f"bake model {MODEL_NAME} version {trained.model_version} into an image")
    baked = bake(MODEL_NAME, trained.model_version, workdir / "bundles", workdir / "images" / MODEL_NAME)
    upload_bundle(baked.bundle_dir, bundle_uri(resources.model_store_uri, MODEL_NAME, trained.model_version))

    steps.start("scoring features", "feature job on the logs to score, with the bundle's encoding")
    score_features = run_feature_job(
        spark, score_logs, workdir / "features" / f"dt={config.dt}", encoding_path=baked.bundle_dir / "encoding.parquet",
        fit=False, partitions=config.partitions, max_malformed_fraction=config.max_malformed_fraction,
    )
    upload_directory(s3, workdir / "features" / f"dt={config.dt}", resources.features_bucket,
                     f"features/dt={config.dt}", "*.parquet")

    steps.start("scoring", f"dispatch and score with {config.workers} workers")
    result = dispatch(s3, sqs, resources.queue_url, resources.features_bucket, resources.predictions_bucket,
                      config.dt, MODEL_NAME, trained.model_version)
    worker_env = dict(os.environ, **aws, QUEUE_URL=resources.queue_url, MODEL_SOURCE="oci",
                      MODEL_IMAGE=f"{baked.image.layout}:{baked.image.tag}", IMAGE_REF=baked.image.tag,
                      IMAGE_DIGEST=baked.image.digest, MODEL_STORE_URI=resources.model_store_uri,
                      PREDICTIONS_BUCKET=resources.predictions_bucket, WAIT_TIME_SECONDS="1",
                      # Several workers on one host cannot share the default metrics port 8080.
                      METRICS_PORT="0",
                      SCORING_THREADS=str(max(1, (os.cpu_count() or 2) // config.workers)))
    workers = start_workers(config.workers, worker_env, workdir / "logs")
    stack.callback(stop_workers, workers)
    prefix = f"predictions/dt={config.dt}/run={result.run_id}/"
    seconds = wait_for_outputs(s3, resources.predictions_bucket, prefix, len(score_features.partitions),
                               workers, config.timeout)
    stop_workers(workers)

    steps.start("report", "collect predictions and write the run report")
    from ctr.report import build_report

    report = build_report(
        s3, resources.predictions_bucket, prefix, workdir / "predictions" / result.run_id,
        workdir / "features" / f"dt={config.dt}", seconds=seconds,
        facts={"run_id": result.run_id, "dt": config.dt, "model_name": MODEL_NAME,
               "model_version": trained.model_version, "mlflow_run_id": trained.run_id,
               "mlflow_tracking_uri": mlflow_url, "image_reference": str(baked.image),
               "image_digest": baked.image.digest, "bundle_sha256": baked.bundle_digest,
               "output_location": f"s3://{resources.predictions_bucket}/{prefix}",
               "local_copy": str(workdir / "predictions" / result.run_id),
               "malformed_lines": {"train": train_features.malformed.to_dict(),
                                   "score": score_features.malformed.to_dict()},
               "train_metrics": trained.metrics},
    )
    steps.finish()
    report["step_seconds"] = steps.seconds
    report_path = workdir / "reports" / f"{result.run_id}.json"
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    report["report_path"] = str(report_path)
    return report
