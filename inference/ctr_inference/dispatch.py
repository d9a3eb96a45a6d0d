"""Dispatcher: one score request per feature partition of a date.

Before it queues anything, the dispatcher writes the run's plan (``_run.json``:
model version and every expected partition) under the run prefix, so the
worker that writes the last output can tell that the run is complete.
Dispatching is idempotent: partitions that already have an output are skipped
unless ``force`` is set. A forced dispatch starts a new generation of the run,
so the outputs it replaces no longer count toward completion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ctr_inference.errors import CtrError
from ctr_inference.messages import (
    DEFAULT_PREDICTIONS_PREFIX,
    ScoreRequest,
    make_request,
    run_id_for,
    run_prefix,
    split_s3_uri,
)
from ctr_inference.runs import (
    RunLocation,
    RunPlan,
    SanityBounds,
    clear_completion,
    delete_failure,
    expected_partitions,
    finalize_run,
    first_missing_output,
    incoming_prefix_of,
    list_run,
    read_plan,
    utc_now,
    write_plan,
)
from ctr_inference.storage import list_keys

__all__ = ["DispatchResult", "dispatch", "feature_partitions", "latest_model_version", "list_keys"]

logger = logging.getLogger(__name__)

# SendMessageBatch accepts at most 10 entries.
SQS_BATCH = 10


@dataclass
class DispatchResult:
    """Partitions that one dispatch sent and skipped."""

    run_id: str
    sent: list[str]
    skipped: list[str]
    run_prefix: str = ""
    completion: str | None = None


def feature_partitions(s3, features_bucket: str, dt: str) -> list[str]:
    """Return the ``s3://`` URIs of the feature partitions of date ``dt``."""
    prefix = f"features/dt={dt}/"
    return [f"s3://{features_bucket}/{key}" for key in list_keys(s3, features_bucket, prefix)
            if key.endswith(".parquet") and not key.rsplit("/", 1)[-1].startswith(("_", "."))]


def existing_outputs(s3, request: ScoreRequest) -> set[str]:
    """Return the output URIs that already exist in the request's run prefix."""
    location = RunLocation.of_request(request)
    return {f"s3://{location.bucket}/{location.output_key(name)}" for name in list_run(s3, location).outputs}


def latest_model_version(s3, model_store_uri: str, model_name: str) -> str:
    """Return the highest numeric model version with a bundle in the model store.

    Raises:
        CtrError: the store has no bundle of ``model_name``.
    """
    bucket, prefix = split_s3_uri(model_store_uri.rstrip("/") + f"/{model_name}/")
    versions = set()
    for key in list_keys(s3, bucket, prefix):
        version, _, rest = key[len(prefix):].partition("/")
        if rest == "bundle.json" and version.isdigit():
            versions.add(int(version))
    if not versions:
        raise CtrError(f"no bundle of model {model_name} under {model_store_uri}; give --model-version")
    return str(max(versions))


def send_requests(sqs, queue_url: str, requests: list[ScoreRequest]) -> list[str]:
    """Send requests in batches of ten and return the partitions sent.

    Raises:
        CtrError: the queue rejected an entry; the partitions sent before it stay queued.
    """
    sent = []
    for start in range(0, len(requests), SQS_BATCH):
        batch = requests[start:start + SQS_BATCH]
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": r.to_json()} for i, r in enumerate(batch)],
        )
        failed = response.get("Failed", [])
        sent.extend(batch[int(item["Id"])].partition for item in response.get("Successful", []))
        if failed:
            raise CtrError(
                f"queue rejected {len(failed)} score requests ({failed[0].get('Code')}: "
                f"{failed[0].get('Message')}) after {len(sent)} were sent; dispatch again to send the rest"
            )
    return sent


def dispatch(
    s3, sqs, queue_url: str, features_bucket: str, predictions_bucket: str, dt: str,
    model_name: str, model_version: str, force: bool = False, bounds: SanityBounds | None = None,
    predictions_prefix: str = DEFAULT_PREDICTIONS_PREFIX,
) -> DispatchResult:
    """Write the run plan, then send one score request per feature partition of ``dt`` without an output.

    With ``force`` every partition is queued again. When anything is queued,
    the run's manifest and ``_SUCCESS``/``_FAILED`` markers are removed, as the
    run is no longer complete. When nothing is left to queue and the run has
    no marker yet, the run is finalized here, so a run whose last worker died
    between its output and its manifest still completes.

    Raises:
        CtrError: the date has no feature partitions, or the queue rejected a request.
    """
    partitions = feature_partitions(s3, features_bucket, dt)
    if not partitions:
        raise CtrError(f"no feature partitions under s3://{features_bucket}/features/dt={dt}/")
    run_id = run_id_for(dt, str(model_version))
    run_prefix(predictions_bucket, dt, run_id, predictions_prefix)  # rejects an invalid prefix
    location = RunLocation(predictions_bucket, dt, run_id, predictions_prefix)
    previous = read_plan(s3, location)
    generation = previous.generation if previous else 0
    if force:
        generation += 1
    requests = [make_request(uri, dt, model_name, str(model_version), predictions_bucket, generation,
                             predictions_prefix)
                for uri in partitions]
    listing = list_run(s3, location)
    done = set() if force else listing.outputs
    pending = [r for r in requests if r.partition not in done]
    skipped = [r.partition for r in requests if r.partition in done]

    now = utc_now()
    plan = RunPlan(
        run_id=location.run_id, dt=dt, model_name=model_name, model_version=str(model_version),
        inputs={r.partition: r.input_uri for r in requests},
        dispatched_at=previous.dispatched_at if previous and not force else now,
        last_dispatched_at=now, generation=generation,
    )
    write_plan(s3, location, plan)

    completion = None
    if pending:
        clear_completion(s3, location)
        for request in pending:
            if request.partition in listing.failures:
                delete_failure(s3, location, request.partition)
        sent = send_requests(sqs, queue_url, pending)
    else:
        sent = []
        if not listing.markers & {"_SUCCESS", "_FAILED"}:
            expected = expected_partitions(s3, location, plan, incoming_prefix_of(s3, location))
            known = set() if generation else set(listing.outputs)
            if first_missing_output(s3, location, expected, known, generation) is None:
                completion = finalize_run(s3, location, expected, model_name, str(model_version),
                                          bounds or SanityBounds.from_env(), plan.dispatched_at,
                                          generation).state
    logger.info("dispatched run %s: %d partitions sent, %d already scored", location.run_id,
                len(sent), len(skipped), extra={"run_id": location.run_id, "model_version": str(model_version)})
    return DispatchResult(location.run_id, sent, skipped, location.uri, completion)
