"""Dispatcher: one score request per feature partition of a date."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ctr_inference.errors import CtrError
from ctr_inference.messages import (
    DEFAULT_PREDICTIONS_PREFIX,
    ScoreRequest,
    make_request,
    split_s3_uri,
)

logger = logging.getLogger(__name__)


@dataclass
class DispatchResult:
    """What one dispatch sent and skipped."""

    run_id: str
    sent: list[str]
    skipped: list[str]


def list_keys(s3, bucket: str, prefix: str) -> list[str]:
    """Return every key under ``prefix``, sorted."""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def feature_partitions(s3, features_bucket: str, dt: str) -> list[str]:
    """Return the ``s3://`` URIs of the feature partitions of date ``dt``."""
    prefix = f"features/dt={dt}/"
    return [f"s3://{features_bucket}/{key}" for key in list_keys(s3, features_bucket, prefix)
            if key.endswith(".parquet")]


def existing_outputs(s3, request: ScoreRequest) -> set[str]:
    """Return the output URIs that already exist in the request's run prefix."""
    bucket, prefix = split_s3_uri(request.output_prefix)
    return {f"s3://{bucket}/{key}" for key in list_keys(s3, bucket, prefix)}


def dispatch(
    s3, sqs, queue_url: str, features_bucket: str, predictions_bucket: str, dt: str,
    model_name: str, model_version: str, force: bool = False,
    predictions_prefix: str = DEFAULT_PREDICTIONS_PREFIX,
) -> DispatchResult:
    """Send one score request per feature partition of ``dt``.

    Outputs go under ``predictions_prefix`` in the predictions bucket.
    Partitions that already have an output in the run are skipped unless
    ``force``, so running the dispatcher twice queues nothing new.

    Raises:
        CtrError: the date has no feature partitions.
    """
    partitions = feature_partitions(s3, features_bucket, dt)
    if not partitions:
        raise CtrError(f"no feature partitions under s3://{features_bucket}/features/dt={dt}/")
    requests = [make_request(uri, dt, model_name, model_version, predictions_bucket,
                             predictions_prefix)
                for uri in partitions]
    done = set() if force else existing_outputs(s3, requests[0])

    sent, skipped = [], []
    pending = [r for r in requests if r.output_uri not in done]
    skipped = [r.partition for r in requests if r.output_uri in done]
    for start in range(0, len(pending), 10):
        batch = pending[start:start + 10]
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": r.to_json()} for i, r in enumerate(batch)],
        )
        if response.get("Failed"):
            raise CtrError(f"queue rejected {len(response['Failed'])} score requests: {response['Failed'][0]}")
        sent.extend(r.partition for r in batch)
    logger.info("dispatched run %s: %d partitions sent, %d already scored",
                requests[0].run_id, len(sent), len(skipped))
    return DispatchResult(requests[0].run_id, sent, skipped)
