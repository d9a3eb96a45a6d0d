"""Classification of partition failures, and the back-off of a released failed message."""

from __future__ import annotations

from ctr_inference.errors import (
    BundleError,
    CorruptPartitionError,
    FeatureDtypeError,
    InputNotFoundError,
    MessageError,
    MissingFeatureError,
    ModelUnavailableError,
    UnknownFormatError,
)

# Failures that may pass by themselves (an S3 or SQS outage, an unexpected
# error). Their back-off doubles with each receive, so a short outage does not
# use up maxReceiveCount and dead-letter healthy partitions.
TRANSIENT_REASONS = ("storage_error", "internal_error")
MAX_BACKOFF_SECONDS = 900


def failure_reason(error: BaseException) -> str:
    """Return the short failure reason used in metrics labels, failure records and logs."""
    from botocore.exceptions import BotoCoreError, ClientError

    reasons = (
        (MessageError, "invalid_message"),
        (InputNotFoundError, "missing_input"),
        (UnknownFormatError, "unknown_format"),
        (CorruptPartitionError, "corrupt_parquet"),
        (MissingFeatureError, "missing_column"),
        (FeatureDtypeError, "wrong_dtype"),
        (ModelUnavailableError, "model_unavailable"),
        (BundleError, "model_unavailable"),
        (ClientError, "storage_error"),
        (BotoCoreError, "storage_error"),
    )
    for kind, reason in reasons:
        if isinstance(error, kind):
            return reason
    return "internal_error"


def failure_backoff(reason: str, receive_count: int, base_seconds: int) -> int:
    """Return the visibility timeout of a released failed message, in seconds.

    Input errors come back after ``base_seconds``, because waiting does not
    fix them. Transient ones wait ``base_seconds * 2 ** (receive_count - 1)``,
    at most ``MAX_BACKOFF_SECONDS``.
    """
    if reason not in TRANSIENT_REASONS:
        return base_seconds
    return min(MAX_BACKOFF_SECONDS, base_seconds * 2 ** max(0, receive_count - 1))
