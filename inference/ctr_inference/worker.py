"""The SQS inference worker: the container entrypoint of the inference Deployment.

For each message the worker decodes the score request (or the S3 event for
an ``incoming/`` object) and downloads the input partition. It scores the
partition with the run's model version and writes the predictions to the
request's deterministic output key. It finalizes the run when this was its
last partition, and only then deletes the message. With ``PREFETCH`` on (the
default) these steps overlap across messages: while one partition is
scored, a prefetch thread receives and downloads the next one and an upload
thread writes the previous one (``ctr_inference.pipeline``).

While a message is held, a heartbeat extends its visibility timeout. A
message that fails is released with a back-off and never deleted, so the
queue's redrive policy moves it to the dead-letter queue after
maxReceiveCount receives. On SIGTERM the worker stops receiving and releases
a prefetched message at once. It finishes the partitions it is scoring and
uploading if that fits in the grace period, or releases them, and exits 0.

Configuration comes from environment variables, described in
``ctr_inference.worker_config``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq

from ctr_inference.bundle import Bundle
from ctr_inference.contract import ROW_ID, Feature, check_columns
from ctr_inference.errors import (
    BundleError,
    CorruptPartitionError,
    CtrError,
    InputNotFoundError,
    MessageError,
    MissingFeatureError,
    ModelUnavailableError,
    UnknownFormatError,
)
from ctr_inference.failures import failure_backoff, failure_reason
from ctr_inference.health import HealthServer, HealthState, WorkerMetrics
from ctr_inference.leases import Lease, LeaseKeeper
from ctr_inference.messages import (
    IncomingObject,
    ScoreRequest,
    is_s3_event,
    make_incoming_request,
    parse_request,
    s3_event_objects,
    split_s3_uri,
)
from ctr_inference.model_source import S3, bundle_uri, open_bundle
from ctr_inference.pipeline import MessageTask, PartitionTask, Prefetcher, Uploader
from ctr_inference.runs import (
    FailureRecord,
    OutputStats,
    RunLocation,
    RunPlan,
    delete_failure,
    expected_partitions,
    finalize_run,
    first_missing_output,
    list_run,
    pin_incoming_run,
    prediction_stats,
    read_incoming_pin,
    read_plan,
    utc_now,
    write_failure,
)
from ctr_inference.scorer import Scorer
from ctr_inference.storage import is_not_found
from ctr_inference.worker_config import WorkerConfig

# WorkerConfig is part of this module's interface: the ConfigMap contract names ``worker.WorkerConfig``.
__all__ = ["Worker", "WorkerConfig", "failure_backoff", "failure_reason", "main"]

# A fixed name: run as `python -m ctr_inference.worker`, __name__ would be "__main__".
logger = logging.getLogger("ctr_inference.worker")

# Below this maxReceiveCount, a few releases on shutdown can dead-letter a healthy message.
MIN_SAFE_MAX_RECEIVE_COUNT = 5
# Model versions other than the worker's own that stay loaded at once.
MAX_EXTRA_MODELS = 2
# How long a date's S3-event pin is trusted before it is read again.
PIN_CACHE_SECONDS = 60.0
# Runs whose plan and seen outputs a worker keeps in memory; older runs are read again if needed.
RUNS_REMEMBERED = 16
PARQUET_MAGIC = b"PAR1"
# LightGBM imports scikit-learn whenever it is installed, for estimator classes
# that the worker never uses. On a busy node that import adds many seconds to
# the start-up of every new pod. pandas cannot be skipped the same way, because
# pyarrow's pandas shim fails on a blocked import.
SKIPPED_IMPORTS = ("sklearn",)


class PartitionLog(logging.LoggerAdapter):
    """Adds the message's and partition's fields to every record, merged with the call's own ``extra``."""

    def process(self, msg, kwargs):
        kwargs["extra"] = dict(self.extra, **kwargs.get("extra", {}))
        return msg, kwargs


class DurationModel:
    """Running averages of partition processing time, for the shutdown decision."""

    def __init__(self, smoothing: float = 0.3):
        self._smoothing = smoothing
        self.seconds_per_row: float | None = None
        self.overhead_seconds: float | None = None

    def record(self, rows: int, seconds: float) -> None:
        def blend(old: float | None, new: float) -> float:
            return new if old is None else old + self._smoothing * (new - old)

        if rows:
            self.seconds_per_row = blend(self.seconds_per_row, seconds / rows)
        else:
            self.overhead_seconds = blend(self.overhead_seconds, seconds)

    def expected_seconds(self, rows: int | None) -> float | None:
        """Return the expected total time of a partition, or None without history."""
        if rows is not None and self.seconds_per_row is not None:
            return self.seconds_per_row * rows + (self.overhead_seconds or 0.0)
        return None


class Worker:
    """Receives score requests from one queue and writes predictions."""

    def __init__(self, config: WorkerConfig, sqs=None, s3=None, metrics: WorkerMetrics | None = None,
                 health: HealthState | None = None):
        self.config = config
        self.sqs = sqs or _client("sqs")
        self.s3 = s3 or _client("s3")
        self.metrics = metrics or WorkerMetrics()
        self.health = health or HealthState(_stall_limit(config), config.max_partition_seconds)
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.leases = LeaseKeeper(self.sqs, config.queue_url, config.visibility_timeout_seconds,
                                  config.heartbeat_seconds, config.max_partition_seconds,
                                  on_change=self.metrics.in_flight.set)
        self.durations = DurationModel()
        self.max_receive_count: int | None = config.max_receive_count or None
        self._baked: Bundle | None = None
        self._scorers: dict[tuple[str, str], Scorer] = {}
        self._plans: dict[str, RunPlan] = {}
        self._known_outputs: dict[tuple[str, int], set[str]] = {}
        self._pins: dict[str, tuple[float, dict | None]] = {}
        self._last_message_at = 0.0
        # Used only when PREFETCH is on; created here so a stop request can always reach it.
        self.prefetcher: Prefetcher[MessageTask] = Prefetcher(self.receive_prepared, self.release_prefetched)

    # Start-up -------------------------------------------------------------------------

    def start(self) -> Bundle:
        """Load the model, read the queue's redrive policy and start the heartbeat.

        Raises:
            BundleError: the bundle is missing, damaged or incompatible.
            CtrError: the queue does not exist.
        """
        bundle = self.load_model()
        self.read_redrive_policy()
        self.leases.start()
        return bundle

    def load_model(self) -> Bundle:
        """Load and verify the worker's own bundle; any failure stops the worker before it serves."""
        config = self.config
        started = time.monotonic()
        self._baked = open_bundle(config.model_source, config.bundle_location, config.cache_dir)
        scorer = Scorer(self._baked, threads=config.scoring_threads or None)
        self._scorers[(self._baked.model_name, self._baked.model_version)] = scorer
        engine = scorer.engine
        # Why the bundle's compiled form is not used; only LightGBMEngine has the attribute.
        fallback_reason = getattr(engine, "fallback_reason", "")
        self.metrics.model.info({
            "model_name": self._baked.model_name, "model_version": self._baked.model_version,
            "bundle_digest": self._baked.digest, "model_source": config.model_source,
            "engine": engine.name, "fallback_reason": fallback_reason,
            "image_ref": config.image_ref, "image_digest": config.image_digest,
        })
        self.health.set_ready(True, serving={
            "model_name": self._baked.model_name, "model_version": self._baked.model_version,
            "engine": engine.name, "fallback_reason": fallback_reason, "prefetch": config.prefetch,
        })
        logger.info("serving model %s version %s from %s (bundle %s, engine %s), loaded in %.2f s",
                    self._baked.model_name, self._baked.model_version, config.model_source,
                    self._baked.digest[:12], engine.name, time.monotonic() - started,
                    extra={"model_version": self._baked.model_version})
        return self._baked

    def read_redrive_policy(self) -> None:
        """Learn maxReceiveCount from the queue, for failure records and a configuration warning.

        Raises:
            CtrError: the queue does not exist.
        """
        from botocore.exceptions import ClientError

        try:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.config.queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if "NonExistentQueue" in code or code == "QueueDoesNotExist":
                raise CtrError(f"queue {self.config.queue_url} does not exist") from error
            logger.warning("cannot read the queue's redrive policy (%s); failure records will not say "
                           "whether a message is dead-lettered", code)
            return
        policy = attributes.get("RedrivePolicy")
        if not policy:
            logger.warning("queue %s has no redrive policy: a message that keeps failing is retried until "
                           "its retention period ends instead of moving to a dead-letter queue",
                           self.config.queue_url)
            return
        count = int(json.loads(policy).get("maxReceiveCount", 0)) or None
        if not self.config.max_receive_count:
            self.max_receive_count = count
        if count and count < MIN_SAFE_MAX_RECEIVE_COUNT:
            logger.warning("queue maxReceiveCount is %d: releases on shutdown count as receives, so a "
                           "healthy message can reach the dead-letter queue; use at least %d",
                           count, MIN_SAFE_MAX_RECEIVE_COUNT)

    # Model versions -------------------------------------------------------------------------

    def scorer_for(self, request: ScoreRequest) -> Scorer:
        """Return the scorer of the request's model version, loading its bundle from the model store if needed.

        Raises:
            ModelUnavailableError: the version is not the worker's own and cannot be loaded.
        """
        key = (request.model_name, request.model_version)
        if key in self._scorers:
            return self._scorers[key]
        serving = f"{self._baked.model_name} version {self._baked.model_version}" if self._baked else "none"
        if not self.config.model_store_uri:
            raise ModelUnavailableError(
                f"run {request.run_id} expects model {request.model_name} version {request.model_version}; "
                f"this worker serves {serving} and MODEL_STORE_URI is not set")
        uri = bundle_uri(self.config.model_store_uri, request.model_name, request.model_version)
        try:
            bundle = open_bundle(S3, uri, self.config.cache_dir)
        except BundleError as error:
            raise ModelUnavailableError(
                f"run {request.run_id} expects model {request.model_name} version {request.model_version}, "
                f"which cannot be loaded from {uri}: {error}") from error
        if (bundle.model_name, bundle.model_version) != key:
            raise ModelUnavailableError(
                f"bundle at {uri} is model {bundle.model_name} version {bundle.model_version}, "
                f"run {request.run_id} expects {request.model_name} version {request.model_version}")
        extra = [k for k in self._scorers if self._baked is None
                 or k != (self._baked.model_name, self._baked.model_version)]
        while len(extra) >= MAX_EXTRA_MODELS:
            self._scorers.pop(extra.pop(0))
        self._scorers[key] = Scorer(bundle, threads=self.config.scoring_threads or None)
        logger.info("loaded model %s version %s from the model store for run %s", request.model_name,
                    request.model_version, request.run_id,
                    extra={"run_id": request.run_id, "model_version": request.model_version})
        return self._scorers[key]

    # Message to requests ----------------------------------------------------------------------

    def decode(self, lease: Lease) -> list[ScoreRequest]:
        """Decode a message body: a score request, or an S3 event for ``incoming/`` objects.

        Raises:
            MessageError: the body is neither, or an S3 event names a key outside ``incoming/``.
        """
        try:
            document = json.loads(lease.body)
        except json.JSONDecodeError as error:
            raise MessageError(f"message body is not JSON: {error}") from error
        if not is_s3_event(document):
            return [parse_request(lease.body)]
        objects = s3_event_objects(document)
        if objects and not self.config.predictions_bucket:
            raise MessageError("S3 event received but PREDICTIONS_BUCKET is not set, so it has no run")
        requests = []
        for item in objects:
            pin = self.incoming_pin(item)
            requests.append(make_incoming_request(item, pin["model"]["name"], str(pin["model"]["version"]),
                                                  self.config.predictions_bucket))
        return requests

    def incoming_pin(self, item: IncomingObject) -> dict:
        """Return the pin of the S3-event run of ``item``'s date, pinning this worker's version if none exists."""
        cached = self._pins.get(item.dt)
        if cached and cached[1] and time.monotonic() - cached[0] < PIN_CACHE_SECONDS:
            return cached[1]
        pin = pin_incoming_run(self.s3, self.config.predictions_bucket, item, self._baked.model_name,
                               self._baked.model_version)
        self._pins[item.dt] = (time.monotonic(), pin)
        return pin

    def incoming_prefix(self, location: RunLocation) -> str | None:
        """Return the ``incoming/`` prefix that feeds this run, from the date's pin (cached briefly)."""
        cached = self._pins.get(location.dt)
        if cached and time.monotonic() - cached[0] < PIN_CACHE_SECONDS:
            pin = cached[1]
        else:
            pin = read_incoming_pin(self.s3, location.bucket, location.dt)
            self._pins[location.dt] = (time.monotonic(), pin)
        if pin and pin.get("run_id") == location.run_id:
            return pin.get("incoming_prefix")
        return None

    # One partition: fetch, decode, score, write -----------------------------------------------

    def fetch_partition(self, request: ScoreRequest) -> bytes:
        """Download the request's input object.

        Raises:
            InputNotFoundError: the object does not exist.
        """
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(request.input_uri)
        try:
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as error:
            if is_not_found(error):
                raise InputNotFoundError(f"input partition {request.input_uri} does not exist") from error
            raise

    def decode_partition(self, request: ScoreRequest, body: bytes, features: list[Feature]) -> pa.Table:
        """Decode Parquet bytes into a table of ``row_id`` and the model's features.

        Columns are selected by name, so their order does not matter and
        extra columns are never read.

        Raises:
            UnknownFormatError: the object is not Parquet.
            CorruptPartitionError: the object is truncated or damaged Parquet.
            MissingFeatureError, FeatureDtypeError: the columns break the feature contract.
        """
        uri = request.input_uri
        if len(body) < 8 or (body[:4] != PARQUET_MAGIC and body[-4:] != PARQUET_MAGIC):
            raise UnknownFormatError(f"input partition {uri} is not Parquet: {len(body)} bytes without "
                                     "the PAR1 magic bytes")
        try:
            parquet = pq.ParquetFile(io.BytesIO(body))
            schema = parquet.schema_arrow
        except (pa.ArrowException, OSError) as error:
            raise CorruptPartitionError(f"input partition {uri} is damaged Parquet: {error}") from error
        if schema.get_field_index(ROW_ID) < 0:
            raise MissingFeatureError(ROW_ID)
        check_columns(schema, features)
        columns = [ROW_ID] + [f.name for f in features if f.name != ROW_ID]
        try:
            return parquet.read(columns=columns)
        except (pa.ArrowException, OSError) as error:
            raise CorruptPartitionError(f"input partition {uri} is damaged Parquet: {error}") from error

    def score_partition(self, scorer: Scorer, table: pa.Table) -> pa.Table:
        """Return the prediction table (``row_id``, ``ctr``, ``model_version``) of a decoded partition."""
        return scorer.score(table)

    def write_output(self, request: ScoreRequest, predictions: pa.Table, scorer: Scorer,
                     started_at: float, seconds: float) -> OutputStats:
        """Write the predictions to the request's output key in one PUT, with provenance.

        The Parquet metadata records what produced the predictions. The S3 user
        metadata adds rows, prediction statistics and timings, so the run
        manifest and ``ctr status`` read them without downloading the object.
        """
        bundle = scorer.bundle
        provenance = {
            "ctr.run_id": request.run_id, "ctr.partition": request.partition, "ctr.input": request.input_uri,
            "ctr.model_name": bundle.model_name, "ctr.model_version": bundle.model_version,
            "ctr.bundle_digest": bundle.digest, "ctr.image_ref": self.config.image_ref,
            "ctr.image_digest": self.config.image_digest, "ctr.engine": scorer.engine.name,
        }
        table = predictions.replace_schema_metadata(provenance)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")

        rows, prediction_sum, nulls = prediction_stats(predictions)
        stats = OutputStats(
            partition=request.partition, rows=rows, prediction_sum=prediction_sum, null_predictions=nulls,
            model_name=bundle.model_name, model_version=bundle.model_version, bundle_digest=bundle.digest,
            image_ref=self.config.image_ref, image_digest=self.config.image_digest, engine=scorer.engine.name,
            worker=self.config.worker_name, started=started_at, finished=time.time(),
            scoring_seconds=round(seconds, 6), generation=request.generation,
        )
        bucket, key = split_s3_uri(request.output_uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue(), Metadata=stats.to_s3_metadata(),
                           ContentType="application/vnd.apache.parquet")
        return stats

    def complete_run(self, request: ScoreRequest, lease: Lease, log: PartitionLog) -> None:
        """Finalize the request's run when every expected partition has an output.

        The worker remembers which outputs of a run it has seen: one listing
        the first time, then a HEAD request per output it has not seen yet, in
        order, stopping at the first one still missing. A check therefore
        costs one request while the run is far from complete, not a listing
        of the whole run. Errors propagate, so the message is released and
        the check runs again at the next delivery: a complete run is never
        left without a marker.
        """
        location = RunLocation.of_request(request)
        plan = self._plans.get(request.run_id)
        fresh = plan is None or plan.generation < request.generation
        if fresh:
            plan = read_plan(self.s3, location)
        incoming = self.incoming_prefix(location)
        if plan is None and not incoming:
            if lease.receive_count > 1:
                delete_failure(self.s3, location, request.partition)
            log.debug("run has no plan and no incoming/ prefix, so its completion is not tracked")
            return
        if plan is not None:
            self._remember(self._plans, request.run_id, plan)
        generation = plan.generation if plan else 0
        if generation > request.generation:
            # A forced dispatch replaced this message's generation; its new message completes the run.
            return

        known = self._known_outputs.get((request.run_id, generation))
        if known is None:
            listing = list_run(self.s3, location)
            # A listing cannot tell generations apart, so after a forced dispatch every output is checked.
            known = set() if generation else listing.outputs
            self._remember(self._known_outputs, (request.run_id, generation), known)
            if request.partition in listing.failures:
                delete_failure(self.s3, location, request.partition)
        elif lease.receive_count > 1:
            # An earlier delivery of this message may have left a failure record.
            delete_failure(self.s3, location, request.partition)
        known.add(request.partition)

        expected = expected_partitions(self.s3, location, plan, incoming)
        if first_missing_output(self.s3, location, expected, known, generation) is not None:
            return
        if not fresh:
            # A later dispatch may have added partitions since the plan was cached.
            plan = read_plan(self.s3, location)
            self._remember(self._plans, request.run_id, plan)
            if plan.generation != generation:
                return
            expected = expected_partitions(self.s3, location, plan, incoming)
            if first_missing_output(self.s3, location, expected, known, generation) is not None:
                return
        completion = finalize_run(self.s3, location, expected, request.model_name, request.model_version,
                                  self.config.sanity, plan.dispatched_at if plan else "", generation)
        self.metrics.runs_completed.labels(completion.state).inc()

    @staticmethod
    def _remember(cache: dict, key, value) -> None:
        """Store per-run state, forgetting the oldest run beyond ``RUNS_REMEMBERED``."""
        cache.pop(key, None)
        cache[key] = value
        while len(cache) > RUNS_REMEMBERED:
            cache.pop(next(iter(cache)))

    # The stages of one message: prepare, score, upload -----------------------------------------

    def prepare_message(self, lease: Lease) -> MessageTask | None:
        """Decode a message, then fetch and decode the input partition of each of its requests.

        Returns None after a failure, which ``fail`` has logged, recorded and released.
        """
        request = None
        try:
            task = MessageTask(lease)
            # NOTE: an S3 event with several records keeps the input of every record in
            # memory at once. S3 event notifications normally carry one record each.
            for request in self.decode(lease):
                task.partitions.append(self.prepare_partition(lease, request))
            return task
        except Exception as error:  # noqa: BLE001 - every failure releases the message, none stops the loop
            self.fail(lease, request, error)
            return None

    def prepare_partition(self, lease: Lease, request: ScoreRequest) -> PartitionTask:
        """Load the request's model version, then download and decode its input partition."""
        lease.context = self._context(request)
        log = PartitionLog(logger, lease.log_fields())
        started_at, started = time.time(), time.monotonic()
        log.info("scoring partition %s (receive %d)", request.input_uri, lease.receive_count)

        task = PartitionTask(request, self.scorer_for(request), started_at, started)
        body = self.fetch_partition(request)
        task.table = self.decode_partition(request, body, task.scorer.bundle.features)
        lease.rows = (lease.rows or 0) + task.table.num_rows
        task.work_seconds = time.monotonic() - task.started
        log.debug("fetched and decoded %d rows in %.3f s", task.table.num_rows, task.work_seconds)
        return task

    def score_message(self, task: MessageTask) -> MessageTask | None:
        """Score every partition of a prepared message; None after a failure, which ``fail`` handled."""
        request = None
        try:
            for partition in task.partitions:
                request = partition.request
                started = time.monotonic()
                partition.predictions = self.score_partition(partition.scorer, partition.table)
                partition.table = None
                partition.work_seconds += time.monotonic() - started
                self._fault_delay(task.lease)
            return task
        except Exception as error:  # noqa: BLE001 - every failure releases the message, none stops the loop
            self.fail(task.lease, request, error)
            return None

    def upload_message(self, task: MessageTask) -> None:
        """Write each partition's output and finalize its run, then delete the message.

        Any failure releases the message through ``fail`` instead, so a
        message is deleted only after every one of its outputs is written.
        """
        lease = task.lease
        request = None
        try:
            for partition in task.partitions:
                request = partition.request
                self.deliver_partition(lease, partition)
            if task.partitions:
                self.durations.record(lease.rows or 0, lease.seconds_since_start or 0.0)
            else:
                PartitionLog(logger, lease.log_fields()).info(
                    "acknowledged a message without data objects (S3 test event or marker file)")
            if not self.delete_message(lease):
                PartitionLog(logger, lease.log_fields()).warning(
                    "outputs written, but the message was released on shutdown before its delete; "
                    "its next delivery rewrites the same outputs")
        except Exception as error:  # noqa: BLE001 - every failure releases the message, none stops the loop
            self.fail(lease, request, error)

    def deliver_partition(self, lease: Lease, partition: PartitionTask) -> None:
        """Write one partition's predictions, then finalize its run if this was the run's last partition."""
        request = partition.request
        lease.context = self._context(request)
        log = PartitionLog(logger, lease.log_fields())
        stats = self.write_output(request, partition.predictions, partition.scorer, partition.started_at,
                                  partition.work_seconds)
        log.debug("wrote %s", request.output_uri)
        self.complete_run(request, lease, log)

        seconds = time.monotonic() - partition.started
        self.metrics.partitions_scored.inc()
        self.metrics.rows_scored.inc(stats.rows)
        self.metrics.scoring_seconds.observe(seconds)
        log.info("scored %d rows in %.3f s (%.3f s of it fetching, decoding and scoring), wrote %s",
                 stats.rows, seconds, partition.work_seconds, request.output_uri)

    def delete_message(self, lease: Lease) -> bool:
        """Delete the message after its outputs are written; False when shutdown released it first."""
        return self.leases.delete(lease)

    def _context(self, request: ScoreRequest) -> dict:
        return {"run_id": request.run_id, "partition": request.partition,
                "model_version": request.model_version, "worker": self.config.worker_name}

    def _fault_delay(self, lease: Lease) -> None:
        if self.config.fault_delay_before_write_seconds:
            PartitionLog(logger, lease.log_fields()).warning(
                "FAULT_DELAY_BEFORE_WRITE_SECONDS is set: holding the scored partition for %.1f s before "
                "writing", self.config.fault_delay_before_write_seconds)
            time.sleep(self.config.fault_delay_before_write_seconds)

    # The queue -------------------------------------------------------------------------------

    def receive(self) -> list[Lease]:
        """Long-poll for one message and take a lease on it."""
        response = self.sqs.receive_message(
            QueueUrl=self.config.queue_url, MaxNumberOfMessages=1,
            WaitTimeSeconds=self.config.wait_time_seconds,
            VisibilityTimeout=self.config.visibility_timeout_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        leases = [self.leases.add(message) for message in response.get("Messages", [])]
        if leases:
            self._last_message_at = time.monotonic()
        return leases

    def receive_or_back_off(self) -> list[Lease] | None:
        """Receive as ``receive`` does; on failure log it, wait ``FAILURE_BACKOFF_SECONDS`` and return None."""
        try:
            return self.receive()
        except Exception as error:  # noqa: BLE001 - a queue outage must not end the worker
            backoff = max(1, self.config.failure_backoff_seconds)
            logger.warning("receive failed, retrying in %d s: %s", backoff, error)
            self.stopping.wait(backoff)
            return None

    def process(self, lease: Lease) -> None:
        """Process one message start to finish, the sequential path: prepare, score, upload.

        The message is deleted only after every output is written and released on any failure.
        """
        self.health.hold(True)
        lease.started = time.monotonic()
        try:
            task = self.prepare_message(lease)
            if task is not None:
                task = self.score_message(task)
            if task is not None:
                self.upload_message(task)
        finally:
            self.health.hold(False)

    def fail(self, lease: Lease, request: ScoreRequest | None, error: Exception) -> None:
        """Log a failure once, record it for ``ctr status`` and release the message with a back-off."""
        reason = failure_reason(error)
        self.metrics.failures.labels(reason).inc()
        dead_lettered = None
        if self.max_receive_count:
            dead_lettered = lease.receive_count >= self.max_receive_count
        fields = dict(lease.log_fields(), reason=reason)
        last = " (last delivery: the queue moves it to the dead-letter queue)" if dead_lettered else ""
        subject = "partition" if request is not None else "message"
        PartitionLog(logger, fields).error(
            "%s failed on receive %d%s: %s: %s", subject, lease.receive_count, last, reason, error,
            exc_info=error if reason == "internal_error" else None)

        if request is not None:
            record = FailureRecord(
                run_id=request.run_id, partition=request.partition, reason=reason, error=str(error),
                receive_count=lease.receive_count, max_receive_count=self.max_receive_count,
                dead_lettered=dead_lettered, model_version=request.model_version,
                worker=self.config.worker_name, image_ref=self.config.image_ref, failed_at=utc_now(),
            )
            try:
                write_failure(self.s3, RunLocation.of_request(request), record)
            except Exception as record_error:  # noqa: BLE001 - the release below matters more
                PartitionLog(logger, fields).warning("could not write the failure record: %s", record_error)
        if self.leases.release(lease, failure_backoff(reason, lease.receive_count,
                                                      self.config.failure_backoff_seconds)):
            self.metrics.released.labels("failure").inc()

    def release_on_shutdown(self, lease: Lease, message: str) -> None:
        """Release a message that was never started (visibility 0), so another worker takes it at once."""
        if self.leases.release(lease, 0):
            self.metrics.released.labels("shutdown").inc()
            logger.info(message, extra=lease.log_fields())

    # The receive loops ------------------------------------------------------------------------

    def run(self) -> int:
        """Receive and process messages until SIGTERM or the idle limit; return the exit code."""
        config = self.config
        mode = "prefetching one message ahead" if config.prefetch else "one message at a time"
        logger.info("worker %s receiving from %s, %s", config.worker_name, config.queue_url, mode)
        try:
            if config.prefetch:
                self.run_pipelined()
            else:
                self.run_sequential()
        finally:
            self.finished.set()
            self.leases.stop()
        logger.info("worker %s stopped", config.worker_name)
        return 0

    def run_sequential(self) -> None:
        """Receive one message, process it to the end, and only then receive the next (``PREFETCH=0``)."""
        idle_since = time.monotonic()
        while not self.stopping.is_set():
            self.health.tick()
            leases = self.receive_or_back_off()
            if leases is None:
                continue
            if not leases:
                if self._idle_limit_reached(idle_since):
                    break
                continue
            for lease in leases:
                if self.stopping.is_set():
                    self.release_on_shutdown(lease, "released a message received during shutdown")
                    continue
                self.process(lease)
            idle_since = time.monotonic()

    def run_pipelined(self) -> None:
        """Score one message while the next one is fetched and the previous one is uploaded.

        The prefetch thread runs ``receive_prepared`` and the upload thread
        ``upload_message``; this thread scores. At most one message waits in
        each of the two stages.
        """
        uploader = Uploader(self.upload_message)
        idle_since = time.monotonic()
        try:
            while not self.stopping.is_set():
                self.health.tick()
                waiting = time.monotonic()
                task = self.prefetcher.take()
                if task is None:
                    if self._idle_limit_reached(max(idle_since, self._last_message_at)):
                        break
                    continue

                lease = task.lease
                # Count only the wait for this message's input, not the wait for a message to arrive.
                self.metrics.input_wait_seconds.inc(min(time.monotonic() - waiting, lease.age))
                lease.started = time.monotonic()
                self.health.hold(True)
                try:
                    scored = self.score_message(task)
                    if scored is not None:
                        waited = uploader.submit(scored)
                        self.metrics.upload_wait_seconds.inc(waited)
                        PartitionLog(logger, lease.log_fields()).debug(
                            "scored, handed over for upload after waiting %.3f s for the previous one", waited)
                finally:
                    self.health.hold(False)
                idle_since = time.monotonic()
        finally:
            self.prefetcher.stop()
            uploader.close()
            self.prefetcher.close()

    def receive_prepared(self) -> MessageTask | None:
        """Receive one message and prepare it for scoring; None when there is nothing to score.

        Runs on the prefetch thread. Its lease is heartbeated from the receive
        on. A message received during shutdown is released at once, and one
        that fails to prepare is released through ``fail``.
        """
        leases = self.receive_or_back_off()
        if not leases:
            return None
        # receive() requests one message (MaxNumberOfMessages=1), so there is at most one lease.
        lease = leases[0]
        if self.stopping.is_set():
            self.release_on_shutdown(lease, "released a message received during shutdown")
            return None
        task = self.prepare_message(lease)
        if task is not None:
            PartitionLog(logger, lease.log_fields()).debug("prefetched the message, waiting for the scorer")
        return task

    def release_prefetched(self, task: MessageTask) -> None:
        """Release a prefetched message whose scoring never started, for another worker."""
        self.release_on_shutdown(task.lease, "shutdown: released the prefetched partition (visibility 0) "
                                             "before scoring it, for another worker")

    def _idle_limit_reached(self, idle_since: float) -> bool:
        idle = time.monotonic() - idle_since
        if self.config.exit_when_idle_seconds and idle >= self.config.exit_when_idle_seconds:
            logger.info("queue idle for %.0f s, stopping", idle)
            return True
        return False

    # Shutdown -----------------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None) -> None:
        """Stop receiving and drain: finish the held partitions within the grace period, or release them.

        A prefetched message that was not started is released at once. A
        second signal releases what is held and exits at once.
        """
        name = signal.Signals(signum).name if signum else "stop request"
        if self.stopping.is_set():
            logger.warning("received %s again, releasing held messages and exiting now", name)
            self._release_and_exit("second signal")
            return
        self.stopping.set()
        self.health.set_draining()
        logger.info("received %s: no more receives, draining for at most %.0f s", name,
                    self.config.grace_seconds)
        threading.Thread(target=self._drain, name="drain", daemon=True).start()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.grace_seconds
        # Off the signal thread, because the release is an SQS request.
        self.prefetcher.stop()
        while not self.finished.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                self._release_and_exit("grace period over")
                return
            for lease in self.leases.held():
                elapsed = lease.seconds_since_start
                expected = self.durations.expected_seconds(lease.rows)
                # A message still in the prefetch stage is released when its fetch returns.
                if elapsed is None or expected is None:
                    continue
                if expected - elapsed > left:
                    logger.info("the held partition needs about %.1f s more, the grace period has %.1f s "
                                "left", expected - elapsed, left, extra=lease.log_fields())
                    self._release_and_exit("partition does not fit in the grace period")
                    return
            self.finished.wait(min(0.1, left))

    def _release_and_exit(self, cause: str) -> None:
        # Holding the lease lock until the process ends means no other thread
        # can delete a message after it was released here.
        with self.leases.lock:
            for lease in self.leases.release_all():
                self.metrics.released.labels("shutdown").inc()
                logger.warning("%s: released the message (visibility 0) for another worker", cause,
                               extra=lease.log_fields())
            logger.info("worker %s stopped", self.config.worker_name)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(0)


def _stall_limit(config: WorkerConfig) -> float:
    """Seconds without a loop iteration after which liveness fails: several long polls and back-offs."""
    return 3 * config.wait_time_seconds + 2 * config.failure_backoff_seconds + 60


def _client(service: str):
    """Return a boto3 client with standard retries; ``AWS_ENDPOINT_URL`` points it at a local emulator."""
    import boto3
    from botocore.config import Config

    return boto3.client(service, config=Config(retries={"mode": "standard", "max_attempts": 5},
                                               max_pool_connections=32))


def skip_optional_imports() -> None:
    """Make ``import sklearn`` fail in this process, unless it is already imported.

    LightGBM imports it inside ``try``/``except ImportError`` and works without it.
    """
    for name in SKIPPED_IMPORTS:
        sys.modules.setdefault(name, None)


def handle_signals(callback) -> threading.Thread:
    """Deliver SIGTERM and SIGINT to ``callback`` on a dedicated thread, at once.

    A Python signal handler runs only when the main thread next executes
    Python code, which can be many seconds into a LightGBM prediction. The
    C-level handler, by contrast, writes the signal number to the wakeup file
    descriptor immediately, whichever thread the kernel picked, and a thread
    reading that socket calls ``callback``. The Python-level handlers are
    no-ops that only keep the default action (terminate) from applying.
    Call this from the main thread.
    """
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    handled = (signal.SIGTERM, signal.SIGINT)
    for signum in handled:
        signal.signal(signum, lambda number, frame: None)

    def read() -> None:
        while True:
            for number in reader.recv(64):
                if number in handled:
                    callback(signal.Signals(number))

    thread = threading.Thread(target=read, name="signals", daemon=True)
    thread.start()
    # Keep the socket pair alive as long as the thread.
    thread.sockets = (reader, writer)
    return thread


def main(argv: list[str] | None = None) -> int:
    """Run the worker with configuration from the environment; return 0 after a drain, 2 when it cannot start."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ctr_inference import logs

    holder: list[Worker] = []

    def on_signal(signum: int) -> None:
        if holder:
            holder[0].request_stop(signum)
        else:
            # Nothing is held before the worker exists, so there is nothing to drain.
            os._exit(0)

    handle_signals(on_signal)
    skip_optional_imports()
    logs.configure(os.environ.get("LOG_LEVEL", "INFO"),
                   json_lines=os.environ.get("LOG_FORMAT", "json") == "json")
    try:
        config = WorkerConfig.from_env()
        metrics = WorkerMetrics()
        health = HealthState(_stall_limit(config), config.max_partition_seconds)
        if config.metrics_port:
            try:
                HealthServer(config.metrics_host, config.metrics_port, health, metrics).start()
            except OSError as error:
                raise CtrError(f"cannot serve the health endpoints on {config.metrics_host}:"
                               f"{config.metrics_port}: {error}") from error
        holder.append(Worker(config, metrics=metrics, health=health))
        holder[0].start()
    except (CtrError, BotoCoreError, ClientError) as error:
        logger.error("worker cannot start: %s", error)
        return 2
    return holder[0].run()

if __name__ == "__main__":
    raise SystemExit(main())
