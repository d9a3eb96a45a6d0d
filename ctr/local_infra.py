"""Create the buckets and queues a run needs on an S3/SQS endpoint (the local emulator or a test account).

Production creates the same resources with Terraform, and this module
mirrors their shape: one bucket per kind of data, and a scoring queue whose redrive
policy moves a message to the dead-letter queue after ``max_receive_count``
receives.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from ctr_inference.errors import CtrError

logger = logging.getLogger(__name__)

# A release on shutdown counts as a receive, so a message needs room for a few
# releases (rolling updates, scale-in) on top of real failures before it is
# dead-lettered.
DEFAULT_MAX_RECEIVE_COUNT = 5


@dataclass(frozen=True)
class Resources:
    """Names and URLs of a provisioned environment."""

    raw_bucket: str
    features_bucket: str
    predictions_bucket: str
    models_bucket: str
    queue_url: str
    dead_letter_queue_url: str

    @property
    def model_store_uri(self) -> str:
        return f"s3://{self.models_bucket}/models"


def provision(s3, sqs, prefix: str = "ctr", max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT,
              visibility_timeout: int = 120) -> Resources:
    """Create (or reuse) the buckets, the scoring queue and its dead-letter queue."""
    if max_receive_count < 1:
        raise CtrError(f"max_receive_count must be at least 1, got {max_receive_count}")
    buckets = {kind: f"{prefix}-{kind}" for kind in ("raw", "features", "predictions", "models")}
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket)

    dlq_url = sqs.create_queue(QueueName=f"{prefix}-scoring-dlq",
                               Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"{prefix}-scoring",
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": str(max_receive_count)}),
        },
    )["QueueUrl"]
    logger.info("provisioned buckets %s and queue %s (dead-letter queue after %d receives)",
                ", ".join(buckets.values()), queue_url, max_receive_count)
    return Resources(buckets["raw"], buckets["features"], buckets["predictions"], buckets["models"],
                     queue_url, dlq_url)
