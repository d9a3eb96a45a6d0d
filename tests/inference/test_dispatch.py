"""The dispatcher against a real S3/SQS endpoint: one message per partition, under a prefix."""

from __future__ import annotations

import json
import uuid

import pytest
from ctr_inference.dispatch import dispatch

DT = "2026-12-03"


@pytest.fixture
def stack(s3, sqs):
    """A feature bucket with two partitions of DT, an empty predictions bucket and a queue."""
    name = f"dispatch-{uuid.uuid4().hex[:8]}"
    features, predictions = f"{name}-features", f"{name}-predictions"
    for bucket in (features, predictions):
        s3.create_bucket(Bucket=bucket)
    for part in ("part-00000", "part-00001"):
        s3.put_object(Bucket=features, Key=f"features/dt={DT}/{part}.parquet", Body=b"x")
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return features, predictions, queue_url


def received_outputs(sqs, queue_url: str) -> list[str]:
    outputs = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages", [])
        if not messages:
            return sorted(outputs)
        outputs += [json.loads(message["Body"])["output"] for message in messages]


def test_dispatch_writes_under_predictions_prefix(s3, sqs, stack):
    features, predictions, queue_url = stack
    prefix = "comparisons/s3-source/predictions/"

    result = dispatch(s3, sqs, queue_url, features, predictions, DT, "ctr-criteo", "4",
                      predictions_prefix=prefix)

    assert len(result.sent) == 2
    assert received_outputs(sqs, queue_url) == [
        f"s3://{predictions}/{prefix}dt={DT}/run={DT}.v4/part-0000{index}.parquet"
        for index in range(2)
    ]


def test_dispatch_skips_outputs_under_its_prefix_only(s3, sqs, stack):
    features, predictions, queue_url = stack
    s3.put_object(Bucket=predictions, Key=f"predictions/dt={DT}/run={DT}.v4/part-00000.parquet",
                  Body=b"x")

    main = dispatch(s3, sqs, queue_url, features, predictions, DT, "ctr-criteo", "4")
    comparison = dispatch(s3, sqs, queue_url, features, predictions, DT, "ctr-criteo", "4",
                          predictions_prefix="comparisons/s3-source/predictions/")

    assert [len(main.sent), len(main.skipped)] == [1, 1]
    assert [len(comparison.sent), len(comparison.skipped)] == [2, 0]
