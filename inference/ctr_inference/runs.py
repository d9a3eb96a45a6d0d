"""The objects that describe a run next to its outputs: plan, failures, manifest, completion markers.

Layout under ``s3://<predictions bucket>/predictions/dt=D/run=R/``::

    <partition>.parquet          one output per input partition (worker)
    _run.json                    the plan: model version and expected partitions (dispatcher)
    _failures/<partition>.json   the latest failure of a partition (worker; removed once it has an output)
    _manifest.json               partitions, rows, model version, image references, timings, sanity check
    _SUCCESS                     empty; written after _manifest.json when the sanity check passes
    _FAILED                      JSON naming each sanity bound that failed (instead of _SUCCESS)

One level up, ``predictions/dt=D/_incoming.json`` pins the model version of
the run that S3 event notifications for ``incoming/dt=D/`` feed, so a rolling
update in the middle of a day does not split that date over two versions.

A run is complete when every expected partition has an output of the run's
current generation (a forced dispatch starts a new one, so older outputs stop
counting until they are rewritten). The expected partitions are the plan's inputs and, for the date's S3-event run, every data
object under ``incoming/dt=D/`` at the time of the check. Whichever worker
writes an output and then finds the run complete writes the manifest and the
marker. The manifest is computed only from the outputs' metadata, so two
workers that finish the last two partitions at once write the same manifest.
"""

from __future__ import annotations

import datetime
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from ctr_inference.contract import PREDICTION
from ctr_inference.errors import CtrError
from ctr_inference.messages import (
    DEFAULT_PREDICTIONS_PREFIX,
    IncomingObject,
    ScoreRequest,
    incoming_partition_name,
    is_marker_name,
    run_dt,
    run_id_for,
    split_s3_uri,
)
from ctr_inference.storage import (
    delete_key,
    get_json,
    is_not_found,
    is_precondition_failed,
    list_keys,
    put_json,
)

logger = logging.getLogger(__name__)

RUN_PLAN = "_run.json"
MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
FAILED = "_FAILED"
FAILURES = "_failures/"
INCOMING_PIN = "_incoming.json"

PLAN_TYPE = "ctr.run-plan"
MANIFEST_TYPE = "ctr.run-manifest"
PIN_TYPE = "ctr.incoming-run"

# Concurrent HEAD requests when a manifest or a status reads every output's metadata.
HEAD_CONCURRENCY = 16


def utc_now() -> str:
    return iso_time(datetime.datetime.now(datetime.UTC).timestamp())


def iso_time(epoch_seconds: float | None) -> str | None:
    """Format Unix seconds as ISO 8601 UTC with milliseconds."""
    if epoch_seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(epoch_seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str | None) -> float | None:
    """Parse an ISO 8601 UTC time written by ``iso_time`` back into Unix seconds."""
    if not text:
        return None
    return datetime.datetime.fromisoformat(text).timestamp()


# Where a run lives ------------------------------------------------------------------


@dataclass(frozen=True)
class RunLocation:
    """The bucket and key prefix of one run."""

    bucket: str
    dt: str
    run_id: str
    # Key prefix of one scoring stack (its PREDICTIONS_PREFIX), above dt=/run=.
    root: str = DEFAULT_PREDICTIONS_PREFIX

    @classmethod
    def of_request(cls, request: ScoreRequest) -> RunLocation:
        bucket, key = split_s3_uri(request.output_uri)
        marker = f"dt={request.dt}/run={request.run_id}/"
        root = key[: key.index(marker)] if marker in key else DEFAULT_PREDICTIONS_PREFIX
        return cls(bucket, request.dt, request.run_id, root)

    @classmethod
    def of_run_id(cls, bucket: str, run_id: str, root: str = DEFAULT_PREDICTIONS_PREFIX) -> RunLocation:
        """Locate a run by its id (``YYYY-MM-DD.vVERSION``).

        Raises:
            MessageError: the run id has another form.
        """
        return cls(bucket, run_dt(run_id), run_id, root)

    @property
    def prefix(self) -> str:
        return f"{self.root}dt={self.dt}/run={self.run_id}/"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        return self.prefix + name

    def output_key(self, partition: str) -> str:
        return self.prefix + f"{partition}.parquet"

    def failure_key(self, partition: str) -> str:
        return self.prefix + f"{FAILURES}{partition}.json"


@dataclass
class RunListing:
    """Names under one run prefix, sorted into outputs, failure records and markers."""

    outputs: set[str] = field(default_factory=set)
    failures: set[str] = field(default_factory=set)
    markers: set[str] = field(default_factory=set)


def list_run(s3, location: RunLocation) -> RunListing:
    """List a run prefix once and sort the keys into outputs, failure records and markers."""
    listing = RunListing()
    for key in list_keys(s3, location.bucket, location.prefix):
        name = key[len(location.prefix):]
        if name.startswith(FAILURES) and name.endswith(".json"):
            listing.failures.add(name[len(FAILURES):-len(".json")])
        elif "/" in name:
            continue
        elif name.endswith(".parquet") and not is_marker_name(name):
            listing.outputs.add(name[: -len(".parquet")])
        else:
            listing.markers.add(name)
    return listing


def head_output(s3, location: RunLocation, partition: str) -> dict | None:
    """Return the S3 user metadata of a partition's output, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        response = s3.head_object(Bucket=location.bucket, Key=location.output_key(partition))
    except ClientError as error:
        if is_not_found(error):
            return None
        raise
    return response.get("Metadata", {})


def first_missing_output(s3, location: RunLocation, expected, known: set[str],
                         generation: int = 0) -> str | None:
    """Return the first expected partition without a current output, or None when every one has one.

    An output is current when its generation is at least ``generation``.
    ``known`` contains partitions already seen with a current output. The
    others are checked in sorted order with HEAD requests, and those found
    are added to ``known``.
    """
    for partition in sorted(set(expected) - known):
        metadata = head_output(s3, location, partition)
        if metadata is None or int(metadata.get("generation", 0)) < generation:
            return partition
        known.add(partition)
    return None


# The plan -----------------------------------------------------------------------------


@dataclass
class RunPlan:
    """The dispatcher's record of a run: its model version and its expected partitions."""

    run_id: str
    dt: str
    model_name: str
    model_version: str
    inputs: dict[str, str]
    dispatched_at: str = ""
    last_dispatched_at: str = ""
    # Forced dispatches so far; outputs of an older generation do not count toward completion.
    generation: int = 0

    def to_document(self) -> dict:
        return {
            "type": PLAN_TYPE, "version": 1, "run_id": self.run_id, "dt": self.dt,
            "model": {"name": self.model_name, "version": self.model_version},
            "inputs": dict(sorted(self.inputs.items())),
            "partitions": len(self.inputs),
            "dispatched_at": self.dispatched_at, "last_dispatched_at": self.last_dispatched_at,
            "generation": self.generation,
        }

    @classmethod
    def from_document(cls, document: dict) -> RunPlan:
        """Read a plan document.

        Raises:
            CtrError: the document is not a run plan.
        """
        if document.get("type") != PLAN_TYPE:
            raise CtrError(f"not a {PLAN_TYPE} document (type {document.get('type')!r})")
        return cls(
            run_id=document["run_id"], dt=document["dt"], model_name=document["model"]["name"],
            model_version=str(document["model"]["version"]), inputs=dict(document.get("inputs", {})),
            dispatched_at=document.get("dispatched_at", ""),
            last_dispatched_at=document.get("last_dispatched_at", ""),
            generation=int(document.get("generation", 0)),
        )


def read_plan(s3, location: RunLocation) -> RunPlan | None:
    document = get_json(s3, location.bucket, location.key(RUN_PLAN))
    return RunPlan.from_document(document) if document else None


def write_plan(s3, location: RunLocation, plan: RunPlan) -> None:
    put_json(s3, location.bucket, location.key(RUN_PLAN), plan.to_document())


# The S3-event run of a date -------------------------------------------------------------


def incoming_pin_key(dt: str) -> str:
    return f"predictions/dt={dt}/{INCOMING_PIN}"


def read_incoming_pin(s3, bucket: str, dt: str) -> dict | None:
    return get_json(s3, bucket, incoming_pin_key(dt))


def pin_incoming_run(s3, predictions_bucket: str, item: IncomingObject, model_name: str,
                     model_version: str) -> dict:
    """Return the pin of the run that scores ``item``'s date, creating it with this model version.

    The first worker to see an event for a date writes the pin with a
    conditional put (``If-None-Match: *``), so two workers of different
    versions agree on one run even during a rolling update.
    """
    key = incoming_pin_key(item.dt)
    pin = get_json(s3, predictions_bucket, key)
    if pin is not None:
        return pin
    document = {
        "type": PIN_TYPE, "version": 1, "dt": item.dt,
        "run_id": run_id_for(item.dt, model_version),
        "model": {"name": model_name, "version": str(model_version)},
        "incoming_prefix": item.date_prefix,
        "pinned_at": utc_now(),
    }
    from botocore.exceptions import ClientError

    try:
        put_json(s3, predictions_bucket, key, document, IfNoneMatch="*")
    except ClientError as error:
        if not is_precondition_failed(error):
            raise
        return get_json(s3, predictions_bucket, key) or document
    logger.info("pinned the S3-event run of %s to model %s version %s", item.dt, model_name,
                model_version, extra={"run_id": document["run_id"], "model_version": str(model_version)})
    return document


def expected_partitions(s3, location: RunLocation, plan: RunPlan | None,
                        incoming_prefix: str | None) -> dict[str, str]:
    """Return the partitions a run must score, as partition name to input URI."""
    expected = dict(plan.inputs) if plan else {}
    if incoming_prefix:
        bucket, prefix = split_s3_uri(incoming_prefix)
        for key in list_keys(s3, bucket, prefix):
            if not is_marker_name(key):
                expected[incoming_partition_name(key, location.dt)] = f"s3://{bucket}/{key}"
    return expected


def incoming_prefix_of(s3, location: RunLocation) -> str | None:
    """Return the ``incoming/`` prefix that feeds this run, or None for a dispatched-only run."""
    pin = read_incoming_pin(s3, location.bucket, location.dt)
    if pin and pin.get("run_id") == location.run_id:
        return pin.get("incoming_prefix")
    return None


# Outputs ---------------------------------------------------------------------------------


@dataclass
class OutputStats:
    """Provenance, size and timing of one output, stored as the object's S3 user metadata."""

    partition: str
    rows: int
    prediction_sum: float
    null_predictions: int
    model_name: str
    model_version: str
    bundle_digest: str = ""
    image_ref: str = ""
    image_digest: str = ""
    engine: str = ""
    worker: str = ""
    started: float = 0.0
    finished: float = 0.0
    scoring_seconds: float = 0.0
    generation: int = 0

    _NUMBERS: ClassVar[dict] = {"rows": int, "prediction_sum": float, "null_predictions": int, "started": float,
                "finished": float, "scoring_seconds": float, "generation": int}

    def to_s3_metadata(self) -> dict[str, str]:
        """Return the fields as S3 user metadata: lowercase names with hyphens, string values."""
        return {name.replace("_", "-"): repr(value) if isinstance(value, float) else str(value)
                for name, value in asdict(self).items()}

    @classmethod
    def from_s3_metadata(cls, partition: str, metadata: dict[str, str]) -> OutputStats:
        values = {}
        for name in cls.__dataclass_fields__:
            raw = metadata.get(name.replace("_", "-"))
            if raw is None:
                continue
            values[name] = cls._NUMBERS.get(name, str)(raw)
        values["partition"] = partition
        values.setdefault("rows", 0)
        values.setdefault("prediction_sum", 0.0)
        values.setdefault("null_predictions", 0)
        values.setdefault("model_name", "")
        values.setdefault("model_version", "")
        return cls(**values)

    @property
    def mean_ctr(self) -> float | None:
        valid = self.rows - self.null_predictions
        return self.prediction_sum / valid if valid else None


def prediction_stats(predictions: pa.Table) -> tuple[int, float, int]:
    """Return rows, the sum of valid predictions and the count of null or NaN predictions."""
    column = predictions.column(PREDICTION)
    nan_mask = pc.is_nan(column)
    nan_count = pc.sum(nan_mask).as_py() or 0
    valid = pc.filter(column, pc.invert(nan_mask))
    total = pc.sum(valid).as_py() or 0.0
    return predictions.num_rows, float(total), int(column.null_count + nan_count)


def read_output_stats(s3, location: RunLocation, partitions: list[str]) -> dict[str, OutputStats]:
    """Read every output's metadata with concurrent HEAD requests."""

    def head(partition: str) -> OutputStats:
        response = s3.head_object(Bucket=location.bucket, Key=location.output_key(partition))
        return OutputStats.from_s3_metadata(partition, response.get("Metadata", {}))

    if not partitions:
        return {}
    with ThreadPoolExecutor(max_workers=min(HEAD_CONCURRENCY, len(partitions))) as pool:
        return {stats.partition: stats for stats in pool.map(head, partitions)}


# Failure records ----------------------------------------------------------------------------


@dataclass
class FailureRecord:
    """The latest failure of one partition, for ``ctr status``.

    ``dead_lettered`` is true when the failed delivery was the last one the
    redrive policy allows, so the queue moves the message to the dead-letter
    queue at its next receive; None when the worker does not know maxReceiveCount.
    """

    run_id: str
    partition: str
    reason: str
    error: str
    receive_count: int
    max_receive_count: int | None = None
    dead_lettered: bool | None = None
    model_version: str = ""
    worker: str = ""
    image_ref: str = ""
    failed_at: str = ""

    @classmethod
    def from_document(cls, document: dict) -> FailureRecord:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in document.items() if k in names})


def write_failure(s3, location: RunLocation, record: FailureRecord) -> None:
    put_json(s3, location.bucket, location.failure_key(record.partition), asdict(record))


def delete_failure(s3, location: RunLocation, partition: str) -> None:
    delete_key(s3, location.bucket, location.failure_key(partition))


def read_failures(s3, location: RunLocation, partitions: list[str]) -> list[FailureRecord]:
    records = []
    for partition in sorted(partitions):
        document = get_json(s3, location.bucket, location.failure_key(partition))
        if document:
            records.append(FailureRecord.from_document(document))
    return records


# Sanity check and completion -----------------------------------------------------------------


@dataclass(frozen=True)
class SanityBounds:
    """Bounds a complete run's predictions must meet before ``_SUCCESS`` is written.

    The CTR bounds depend on the data: the defaults only catch a broken model
    (all zeros, all ones) and should be narrowed per model in configuration.
    """

    min_mean_ctr: float = 0.0001
    max_mean_ctr: float = 0.5
    max_null_fraction: float = 0.0
    min_rows: int = 1

    ENVIRONMENT: ClassVar[dict[str, str]] = {
        "min_mean_ctr": "SANITY_MIN_MEAN_CTR",
        "max_mean_ctr": "SANITY_MAX_MEAN_CTR",
        "max_null_fraction": "SANITY_MAX_NULL_FRACTION",
        "min_rows": "SANITY_MIN_ROWS",
    }

    @classmethod
    def from_env(cls, environ: dict | None = None) -> SanityBounds:
        """Read the bounds from ``SANITY_*`` environment variables; unset ones keep their default.

        Raises:
            CtrError: a value is not a number, or the minimum mean CTR exceeds the maximum.
        """
        environ = os.environ if environ is None else environ
        values = {}
        for name, variable in cls.ENVIRONMENT.items():
            raw = environ.get(variable)
            if raw in (None, ""):
                continue
            try:
                values[name] = int(raw) if name == "min_rows" else float(raw)
            except ValueError as error:
                raise CtrError(f"{variable}={raw!r} is not a number") from error
        bounds = cls(**values)
        bounds.validate()
        return bounds

    def validate(self) -> None:
        """Raise CtrError when the bounds cannot all hold at once."""
        if self.min_mean_ctr > self.max_mean_ctr:
            raise CtrError(f"SANITY_MIN_MEAN_CTR {self.min_mean_ctr} is above SANITY_MAX_MEAN_CTR "
                           f"{self.max_mean_ctr}")
        if not 0.0 <= self.max_null_fraction <= 1.0:
            raise CtrError(f"SANITY_MAX_NULL_FRACTION must be within [0, 1], got {self.max_null_fraction}")

    def as_document(self) -> dict:
        return {variable: getattr(self, name) for name, variable in self.ENVIRONMENT.items()}


def check_sanity(rows: int, mean_ctr: float | None, null_fraction: float, model_versions: list[str],
                 expected_version: str, bounds: SanityBounds) -> list[dict]:
    """Return one entry per failed bound (empty when the run passes)."""
    failures = []

    def fail(bound: str, limit, value, message: str) -> None:
        failures.append({"bound": bound, "limit": limit, "value": value, "message": message})

    if rows < bounds.min_rows:
        fail("SANITY_MIN_ROWS", bounds.min_rows, rows,
             f"the run scored {rows} rows, fewer than SANITY_MIN_ROWS {bounds.min_rows}")
    if rows and mean_ctr is None:
        fail("SANITY_MIN_MEAN_CTR", bounds.min_mean_ctr, None, "the run has no valid prediction")
    elif mean_ctr is not None and mean_ctr < bounds.min_mean_ctr:
        fail("SANITY_MIN_MEAN_CTR", bounds.min_mean_ctr, mean_ctr,
             f"mean predicted CTR {mean_ctr:.6g} is below SANITY_MIN_MEAN_CTR {bounds.min_mean_ctr}")
    elif mean_ctr is not None and mean_ctr > bounds.max_mean_ctr:
        fail("SANITY_MAX_MEAN_CTR", bounds.max_mean_ctr, mean_ctr,
             f"mean predicted CTR {mean_ctr:.6g} is above SANITY_MAX_MEAN_CTR {bounds.max_mean_ctr}")
    if null_fraction > bounds.max_null_fraction:
        fail("SANITY_MAX_NULL_FRACTION", bounds.max_null_fraction, null_fraction,
             f"{null_fraction:.6g} of the predictions are null or NaN, above SANITY_MAX_NULL_FRACTION "
             f"{bounds.max_null_fraction}")
    if model_versions != [expected_version]:
        fail("model_version", expected_version, model_versions,
             f"outputs were scored with model versions {model_versions}, the run expects "
             f"{expected_version}")
    return failures


def build_manifest(location: RunLocation, model_name: str, model_version: str,
                   expected: dict[str, str], stats: dict[str, OutputStats], bounds: SanityBounds,
                   dispatched_at: str = "", generation: int = 0) -> dict:
    """Summarize a complete run from its outputs' metadata; the result depends only on its inputs."""
    partitions = []
    for name in sorted(expected):
        item = stats[name]
        partitions.append({
            "name": name, "input": expected[name], "output": f"s3://{location.bucket}/{location.output_key(name)}",
            "rows": item.rows, "mean_ctr": item.mean_ctr, "null_predictions": item.null_predictions,
            "model_version": item.model_version, "bundle_digest": item.bundle_digest,
            "image_ref": item.image_ref, "image_digest": item.image_digest, "engine": item.engine,
            "worker": item.worker, "started": iso_time(item.started), "finished": iso_time(item.finished),
            "scoring_seconds": item.scoring_seconds, "generation": item.generation,
        })
    outputs = [stats[name] for name in sorted(expected)]
    rows = sum(item.rows for item in outputs)
    nulls = sum(item.null_predictions for item in outputs)
    valid = rows - nulls
    mean_ctr = sum(item.prediction_sum for item in outputs) / valid if valid else None
    null_fraction = nulls / rows if rows else 0.0
    versions = sorted({item.model_version for item in outputs})

    images: dict[tuple[str, str], int] = {}
    for item in outputs:
        images[(item.image_ref, item.image_digest)] = images.get((item.image_ref, item.image_digest), 0) + 1
    started = [item.started for item in outputs if item.started]
    finished = [item.finished for item in outputs if item.finished]
    first, last = (min(started), max(finished)) if started and finished else (None, None)
    wall = last - first if first is not None else None

    failures = check_sanity(rows, mean_ctr, null_fraction, versions, str(model_version), bounds)
    return {
        "type": MANIFEST_TYPE, "version": 1,
        "run_id": location.run_id, "dt": location.dt,
        "model": {"name": model_name, "version": str(model_version)},
        "generation": generation,
        "model_versions": versions,
        "bundle_digests": sorted({item.bundle_digest for item in outputs}),
        "image_references": [{"image_ref": ref, "image_digest": digest, "partitions": count}
                             for (ref, digest), count in sorted(images.items())],
        "partitions": partitions,
        "partition_count": len(partitions),
        "rows": rows,
        "mean_ctr": mean_ctr,
        "null_fraction": null_fraction,
        "timings": {
            "dispatched_at": dispatched_at or None,
            "first_started": iso_time(first), "last_finished": iso_time(last),
            "wall_seconds": round(wall, 3) if wall is not None else None,
            "scoring_seconds": round(sum(item.scoring_seconds for item in outputs), 3),
            "rows_per_second": round(rows / wall, 1) if wall else None,
        },
        "sanity": {"passed": not failures, "bounds": bounds.as_document(), "failures": failures},
    }


@dataclass
class Completion:
    """Outcome and manifest of a finalized run."""

    state: str  # "succeeded" or "sanity_failed"
    manifest: dict


def finalize_run(s3, location: RunLocation, expected: dict[str, str], model_name: str,
                 model_version: str, bounds: SanityBounds, dispatched_at: str = "",
                 generation: int = 0) -> Completion:
    """Write the manifest of a complete run, then ``_SUCCESS`` or ``_FAILED``.

    The caller has checked that every expected partition has an output.
    Markers of the other outcome are removed, so a run that is scored again
    after a fix ends with exactly one of them.
    """
    stats = read_output_stats(s3, location, sorted(expected))
    manifest = build_manifest(location, model_name, model_version, expected, stats, bounds, dispatched_at,
                              generation)
    put_json(s3, location.bucket, location.key(MANIFEST), manifest)
    context = {"run_id": location.run_id, "model_version": str(model_version)}
    if manifest["sanity"]["passed"]:
        s3.put_object(Bucket=location.bucket, Key=location.key(SUCCESS), Body=b"")
        delete_key(s3, location.bucket, location.key(FAILED))
        logger.info("run complete: %d partitions, %d rows, mean CTR %.6g; wrote %s", len(expected),
                    manifest["rows"], manifest["mean_ctr"] or 0.0, SUCCESS, extra=context)
        return Completion("succeeded", manifest)

    failures = manifest["sanity"]["failures"]
    put_json(s3, location.bucket, location.key(FAILED),
             {"run_id": location.run_id, "failures": failures, "manifest": MANIFEST})
    delete_key(s3, location.bucket, location.key(SUCCESS))
    logger.error("run complete but failed its sanity check: %s; wrote %s",
                 "; ".join(item["message"] for item in failures), FAILED, extra=context)
    return Completion("sanity_failed", manifest)


def clear_completion(s3, location: RunLocation) -> None:
    """Remove the manifest and markers of a run that gets more partitions to score."""
    for name in (SUCCESS, FAILED, MANIFEST):
        delete_key(s3, location.bucket, location.key(name))
