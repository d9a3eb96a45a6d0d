"""The SQS inference worker: the container entrypoint of the inference Deployment.

Loop: long-poll one message, read its feature partition from S3, score it with
the run's model version, write the predictions to the request's deterministic
output key, and only then delete the message. While a partition is scored a
heartbeat thread extends the message's visibility timeout. A message that fails
is released (never deleted) so that the queue's redrive policy moves it to the
dead-letter queue after maxReceiveCount receives.

Configuration comes from the environment (a ConfigMap in Kubernetes); see
``WorkerConfig.from_env``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ctr_inference.bundle import Bundle
from ctr_inference.errors import CtrError, MessageError, PartitionError
from ctr_inference.messages import (
    ScoreRequest,
    is_s3_event,
    parse_request,
    requests_from_s3_event,
    split_s3_uri,
)
from ctr_inference.model_source import BAKED, bundle_uri, open_bundle
from ctr_inference.scorer import Scorer

logger = logging.getLogger(__name__)

# Field annotations are strings under ``from __future__ import annotations``.
_CONVERTERS = {"int": int, "float": float, "str": str}


@dataclass
class WorkerConfig:
    """Worker settings; every field has an environment variable of the same name in capitals."""

    queue_url: str
    model_source: str = BAKED
    bundle_path: str = "/opt/ctr/bundle"
    bundle_uri: str = ""
    model_image: str = ""
    model_store_uri: str = ""
    predictions_bucket: str = ""
    image_ref: str = ""
    image_digest: str = ""
    wait_time_seconds: int = 20
    visibility_timeout_seconds: int = 120
    heartbeat_seconds: int = 30
    grace_seconds: float = 50.0
    failure_backoff_seconds: int = 5
    exit_when_idle_seconds: float = 0.0
    scoring_threads: int = 0
    cache_dir: str = field(default_factory=lambda: os.environ.get("TMPDIR", "/tmp"))
    worker_name: str = field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}")

    @classmethod
    def from_env(cls, environ: dict | None = None) -> WorkerConfig:
        """Read the configuration from environment variables.

        Raises:
            CtrError: ``QUEUE_URL`` is missing or a number is not a number.
        """
        environ = os.environ if environ is None else environ
        if not environ.get("QUEUE_URL"):
            raise CtrError("QUEUE_URL is not set: the worker needs the URL of its SQS queue")
        values = {}
        for name, spec in cls.__dataclass_fields__.items():
            raw = environ.get(name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[name] = _CONVERTERS.get(spec.type, str)(raw)
            except ValueError as error:
                raise CtrError(f"{name.upper()}={raw!r} is not a number") from error
        return cls(**values)


class Heartbeat:
    """Extends one message's visibility timeout until stopped."""

    def __init__(self, sqs, queue_url: str, receipt: str, interval: float, timeout: int, context: dict):
        self._sqs, self._queue_url, self._receipt = sqs, queue_url, receipt
        self._interval, self._timeout, self._context = interval, timeout, context
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._sqs.change_message_visibility(
                    QueueUrl=self._queue_url, ReceiptHandle=self._receipt,
                    VisibilityTimeout=self._timeout,
                )
                logger.debug("extended visibility timeout", extra=self._context)
            except Exception as error:  # noqa: BLE001 - a failed extension must not kill scoring
                logger.warning("visibility extension failed: %s", error, extra=self._context)


class Worker:
    """Receives score requests from one queue and writes predictions."""

    def __init__(self, config: WorkerConfig, sqs=None, s3=None):
        import boto3

        self.config = config
        self.sqs = sqs or boto3.client("sqs")
        self.s3 = s3 or boto3.client("s3")
        self.stopping = threading.Event()
        self._scorers: dict[str, Scorer] = {}
        self._baked: Bundle | None = None
        self._in_flight: dict | None = None
        self._lock = threading.Lock()

    # Start-up ---------------------------------------------------------------

    def load_model(self) -> Bundle:
        """Load and verify the worker's own bundle; any failure stops the worker before it serves."""
        config = self.config
        location = {"baked": config.bundle_path, "s3": config.bundle_uri, "oci": config.model_image}
        self._baked = open_bundle(config.model_source, location.get(config.model_source, ""),
                                  config.cache_dir)
        self._scorers[self._baked.model_version] = Scorer(self._baked,
                                                           threads=config.scoring_threads or None)
        return self._baked

    def scorer_for(self, request: ScoreRequest) -> Scorer:
        """Return the scorer of the request's model version, loading it from the model store if needed.

        Raises:
            BundleError: the version's bundle cannot be loaded from the model store.
            CtrError: the worker has no model store to load another version from.
        """
        version = request.model_version
        if version in self._scorers:
            return self._scorers[version]
        if not self.config.model_store_uri:
            raise CtrError(
                f"run {request.run_id} expects model version {version}, this worker serves "
                f"{self._baked.model_version if self._baked else 'none'} and has no MODEL_STORE_URI"
            )
        uri = bundle_uri(self.config.model_store_uri, request.model_name, version)
        bundle = open_bundle("s3", uri, self.config.cache_dir)
        self._scorers[version] = Scorer(bundle, threads=self.config.scoring_threads or None)
        logger.info("loaded model version %s from %s for run %s", version, uri, request.run_id,
                    extra={"run_id": request.run_id, "model_version": version})
        return self._scorers[version]

    # One partition ------------------------------------------------------------

    def read_partition(self, request: ScoreRequest) -> pa.Table:
        """Download and decode the request's input partition.

        Raises:
            PartitionError: the object is missing or is not Parquet.
        """
        bucket, key = split_s3_uri(request.input_uri)
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey as error:
            raise PartitionError(f"input partition {request.input_uri} does not exist") from error
        try:
            return pq.read_table(io.BytesIO(body))
        except (pa.ArrowInvalid, OSError) as error:
            raise PartitionError(f"input partition {request.input_uri} is not valid Parquet: {error}") from error

    def write_output(self, request: ScoreRequest, predictions: pa.Table, scorer: Scorer) -> None:
        """Write the prediction table to the request's output key, with provenance in the metadata."""
        metadata = {
            "ctr.run_id": request.run_id,
            "ctr.partition": request.partition,
            "ctr.input": request.input_uri,
            "ctr.model_name": scorer.bundle.model_name,
            "ctr.model_version": scorer.bundle.model_version,
            "ctr.bundle_digest": scorer.bundle.digest,
            "ctr.image_ref": self.config.image_ref,
            "ctr.image_digest": self.config.image_digest,
            "ctr.engine": scorer.engine.name,
        }
        table = predictions.replace_schema_metadata({k: str(v) for k, v in metadata.items()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        bucket, key = split_s3_uri(request.output_uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())

    def score_request(self, request: ScoreRequest) -> int:
        """Score one partition end to end and return its row count."""
        scorer = self.scorer_for(request)
        table = self.read_partition(request)
        predictions = scorer.score(table)
        self.write_output(request, predictions, scorer)
        return predictions.num_rows

    # The queue ------------------------------------------------------------------

    def requests_in(self, body: str) -> list[ScoreRequest]:
        """Decode a message body: a score request, or an S3 event for ``incoming/``."""
        try:
            document = json.loads(body)
        except json.JSONDecodeError as error:
            raise MessageError(f"message body is not JSON: {error}") from error
        if is_s3_event(document):
            baked = self._baked
            return requests_from_s3_event(document, baked.model_name, baked.model_version,
                                          self.config.predictions_bucket)
        return [parse_request(body)]

    def handle(self, message: dict) -> None:
        """Process one received message; delete it only after every output is written."""
        config = self.config
        receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        context = {"message_id": message["MessageId"], "receive_count": receive_count,
                   "worker": config.worker_name}
        self._in_flight = message
        started = time.monotonic()
        try:
            requests = self.requests_in(message["Body"])
            with Heartbeat(self.sqs, config.queue_url, message["ReceiptHandle"],
                           config.heartbeat_seconds, config.visibility_timeout_seconds, context):
                for request in requests:
                    context.update(run_id=request.run_id, partition=request.partition,
                                   model_version=request.model_version)
                    rows = self.score_request(request)
                    logger.info("scored %d rows in %.2f s", rows, time.monotonic() - started,
                                extra=context)
            with self._lock:
                if self._in_flight is message:
                    self.sqs.delete_message(QueueUrl=config.queue_url,
                                            ReceiptHandle=message["ReceiptHandle"])
                    self._in_flight = None
            if not requests:
                logger.info("skipped S3 test event", extra=context)
        except Exception as error:  # noqa: BLE001 - every failure releases the message
            logger.error("partition failed: %s: %s", type(error).__name__, error, extra=context)
            self.release(message, config.failure_backoff_seconds)
        finally:
            self._in_flight = None

    def release(self, message: dict, delay: int = 0) -> None:
        """Make a message visible again after ``delay`` seconds; the receive still counts."""
        with self._lock:
            try:
                self.sqs.change_message_visibility(
                    QueueUrl=self.config.queue_url, ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=delay,
                )
            except Exception as error:  # noqa: BLE001 - the visibility timeout releases it anyway
                logger.warning("release of message %s failed: %s", message["MessageId"], error)

    def receive(self) -> list[dict]:
        response = self.sqs.receive_message(
            QueueUrl=self.config.queue_url, MaxNumberOfMessages=1,
            WaitTimeSeconds=self.config.wait_time_seconds,
            VisibilityTimeout=self.config.visibility_timeout_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return response.get("Messages", [])

    def run(self) -> int:
        """Receive and process messages until SIGTERM or idle timeout; return the exit code."""
        idle_since = time.monotonic()
        logger.info("worker %s started on %s", self.config.worker_name, self.config.queue_url)
        while not self.stopping.is_set():
            messages = self.receive()
            if not messages:
                idle = time.monotonic() - idle_since
                if self.config.exit_when_idle_seconds and idle >= self.config.exit_when_idle_seconds:
                    logger.info("queue idle for %.0f s, stopping", idle)
                    break
                continue
            for message in messages:
                if self.stopping.is_set():
                    self.release(message)
                    continue
                self.handle(message)
            idle_since = time.monotonic()
        logger.info("worker %s stopped", self.config.worker_name)
        return 0

    # Shutdown ---------------------------------------------------------------------

    def request_stop(self, signum=None, frame=None) -> None:
        """Stop receiving; release the in-flight message if it does not finish within the grace period."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        logger.info("received signal %s, draining for at most %.0f s", signum, self.config.grace_seconds)
        timer = threading.Timer(self.config.grace_seconds, self._release_and_exit)
        timer.daemon = True
        timer.start()

    def _release_and_exit(self) -> None:
        message = self._in_flight
        if message is not None:
            logger.warning("grace period over, releasing message %s", message["MessageId"])
            self.release(message)
        logging.shutdown()
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Run the worker with configuration from the environment."""
    from ctr_inference import logs

    logs.configure(os.environ.get("LOG_LEVEL", "INFO"), json_lines=os.environ.get("LOG_FORMAT", "json") == "json")
    try:
        config = WorkerConfig.from_env()
        worker = Worker(config)
        bundle = worker.load_model()
    except CtrError as error:
        logger.error("worker cannot start: %s", error)
        return 2
    logger.info("serving model %s version %s (bundle %s)", bundle.model_name, bundle.model_version,
                bundle.digest[:12], extra={"model_version": bundle.model_version})
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    return worker.run()


if __name__ == "__main__":
    raise SystemExit(main())
