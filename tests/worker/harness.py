"""Worker processes, queues and partitions for the worker tests, all on the session's local S3/SQS server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ctr_inference.runs import RunLocation
from ctr_inference.storage import is_not_found

from ctr import local_infra

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_REF = "tiny-v{version}-0123abc"
IMAGE_DIGEST = "sha256:" + "ab" * 32


@dataclass
class Infra:
    """One test's own buckets, queue and dead-letter queue."""

    s3: object
    sqs: object
    resources: local_infra.Resources

    @property
    def queue_url(self) -> str:
        return self.resources.queue_url

    @property
    def dlq_url(self) -> str:
        return self.resources.dead_letter_queue_url

    @property
    def features(self) -> str:
        return self.resources.features_bucket

    @property
    def predictions(self) -> str:
        return self.resources.predictions_bucket

    def run(self, run_id: str) -> RunLocation:
        return RunLocation.of_run_id(self.predictions, run_id)

    def queue_counts(self, url: str | None = None) -> tuple[int, int]:
        """Return (visible, in flight) messages of the queue, or of ``url``."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def exists(self, bucket: str, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if is_not_found(error):
                return False
            raise
        return True

    def get_json(self, bucket: str, key: str) -> dict:
        return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def provision(s3, sqs, visibility_timeout: int = 30, max_receive_count: int = 5) -> Infra:
    """Create buckets and queues with a unique prefix, so tests sharing one server never meet."""
    prefix = "w" + uuid.uuid4().hex[:12]
    resources = local_infra.provision(s3, sqs, prefix=prefix, max_receive_count=max_receive_count,
                                      visibility_timeout=visibility_timeout)
    return Infra(s3, sqs, resources)


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def put_partition(infra: Infra, key: str, table: pa.Table | bytes, bucket: str | None = None) -> str:
    """Upload a table (as Parquet) or raw bytes and return its ``s3://`` URI."""
    body = table if isinstance(table, bytes) else parquet_bytes(table)
    bucket = bucket or infra.features
    infra.s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def read_run_outputs(infra: Infra, run_id: str) -> pa.Table:
    """Concatenate every output of a run (objects ending in ``.parquet`` directly under the run prefix)."""
    location = infra.run(run_id)
    keys = [item["Key"] for page in infra.s3.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket, Prefix=location.prefix) for item in page.get("Contents", [])]
    tables = []
    for key in sorted(keys):
        name = key[len(location.prefix):]
        if "/" not in name and name.endswith(".parquet"):
            body = infra.s3.get_object(Bucket=location.bucket, Key=key)["Body"].read()
            tables.append(pq.read_table(io.BytesIO(body)))
    return pa.concat_tables(tables) if tables else pa.table({"row_id": pa.array([], pa.int64())})


def assert_exactly_once(outputs: pa.Table, expected_ids) -> None:
    """Check that the outputs' ``row_id`` set equals ``expected_ids`` and that no row appears twice."""
    ids = outputs.column("row_id").to_numpy()
    unique = np.unique(ids)
    assert len(ids) == len(unique), f"{len(ids) - len(unique)} duplicate row ids in the outputs"
    missing = set(np.asarray(expected_ids).tolist()) - set(unique.tolist())
    extra = set(unique.tolist()) - set(np.asarray(expected_ids).tolist())
    assert not missing, f"{len(missing)} input rows have no prediction, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} predictions for rows not in the input, e.g. {sorted(extra)[:5]}"


def wait_until(condition, timeout: float, message: str, interval: float = 0.2, diagnostics=None):
    """Poll ``condition`` until it returns a true value and return it; fail with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    detail = f"\n{diagnostics()}" if diagnostics else ""
    raise AssertionError(f"timed out after {timeout:.0f} s: {message}{detail}")


def worker_env(infra: Infra, bundle: Path, tmp_path: Path, **overrides) -> dict:
    """Environment of a worker process that serves ``bundle`` from ``infra``'s queue."""
    version = json.loads((Path(bundle) / "bundle.json").read_text())["model"]["version"]
    env = dict(
        os.environ,
        QUEUE_URL=infra.queue_url,
        MODEL_SOURCE="baked",
        BUNDLE_PATH=str(bundle),
        MODEL_STORE_URI=infra.resources.model_store_uri,
        PREDICTIONS_BUCKET=infra.predictions,
        IMAGE_REF=IMAGE_REF.format(version=version),
        IMAGE_DIGEST=IMAGE_DIGEST,
        WAIT_TIME_SECONDS="1",
        VISIBILITY_TIMEOUT_SECONDS="30",
        HEARTBEAT_SECONDS="5",
        FAILURE_BACKOFF_SECONDS="1",
        GRACE_SECONDS="20",
        SCORING_THREADS="1",
        METRICS_PORT="0",
        METRICS_HOST="127.0.0.1",
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    env["CACHE_DIR"] = str(tmp_path / f"cache-{uuid.uuid4().hex[:8]}")
    env.update({key: str(value) for key, value in overrides.items()})
    return env


class WorkerProcess:
    """One ``python -m ctr_inference.worker`` child process with its log file."""

    def __init__(self, env: dict, log_dir: Path, name: str):
        self.name = name
        self.env = dict(env, WORKER_NAME=name)
        self.log_path = Path(log_dir) / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "ctr_inference.worker"], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def records(self) -> list[dict]:
        """Return the JSON log records written so far (other lines are skipped)."""
        if not self.log_path.exists():
            return []
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                item = json.loads(line)
                if isinstance(item, dict):
                    records.append(item)
        return records

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} (pid {self.pid}) ---\n" + "\n".join(text.splitlines()[-lines:])

    def wait_for_record(self, predicate, timeout: float, description: str) -> dict:
        def found():
            if not self.running() and not any(predicate(r) for r in self.records()):
                raise AssertionError(f"{self.name} exited with {self.process.returncode} before {description}\n"
                                     + self.tail())
            return next((r for r in self.records() if predicate(r)), None)

        return wait_until(found, timeout, f"{self.name}: {description}", diagnostics=self.tail)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30.0, signalled: bool = False) -> None:
        """SIGTERM (unless ``signalled``), then SIGKILL if the process has not exited within ``timeout`` seconds."""
        if not self.running():
            return
        if not signalled:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class WorkerPool:
    """Starts worker processes and stops every one of them at the end of a test."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.workers: list[WorkerProcess] = []

    def start(self, env: dict, name: str | None = None) -> WorkerProcess:
        worker = WorkerProcess(env, self.log_dir, name or f"worker-{len(self.workers)}").start()
        self.workers.append(worker)
        return worker

    def records(self) -> list[dict]:
        return [record for worker in self.workers for record in worker.records()]

    def tails(self) -> str:
        return "\n".join(worker.tail() for worker in self.workers)

    def stop_all(self) -> None:
        signalled = []
        for worker in self.workers:
            if worker.running():
                worker.process.send_signal(signal.SIGTERM)
                signalled.append(worker)
        for worker in signalled:
            worker.stop(signalled=True)


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``ctr`` as a user would, with stdout captured (so not a terminal)."""
    return subprocess.run([sys.executable, "-m", "ctr.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env or dict(os.environ), check=False)


def dispatch_partitions(infra: Infra, dt: str, partitions: int, rows: int, model_version: str = "1",
                        model_name: str = "tiny", start_row_id: int = 1) -> tuple[str, np.ndarray]:
    """Upload ``partitions`` feature partitions of ``rows`` rows for ``dt`` and dispatch their run.

    Returns the run id and every input ``row_id``.
    """
    from ctr_inference.dispatch import dispatch

    from tests.helpers import feature_table

    ids = []
    for index in range(partitions):
        table = feature_table(rows, seed=index, start_row_id=start_row_id + index * rows)
        put_partition(infra, f"features/dt={dt}/part-{index:05d}.parquet", table)
        ids.append(table.column("row_id").to_numpy())
    result = dispatch(infra.s3, infra.sqs, infra.queue_url, infra.features, infra.predictions, dt,
                      model_name, model_version)
    assert len(result.sent) == partitions
    return result.run_id, np.concatenate(ids) if ids else np.array([], dtype=np.int64)


def partition_records(records: list[dict], partition: str, text: str = "") -> list[dict]:
    """Return the log records about ``partition`` whose message contains ``text``."""
    return [r for r in records if r.get("partition") == partition and text in r.get("message", "")]
