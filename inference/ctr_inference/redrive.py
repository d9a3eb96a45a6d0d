"""Move one run's dead-lettered messages back to the scoring queue, after the cause is fixed.

SQS's own redrive (``StartMessageMoveTask``) moves every message of a
dead-letter queue; this one selects the messages of one run. It receives from
the dead-letter queue, sends each message of the run to the scoring queue as a
new message (so its receive count starts again at 0), then deletes it from the
dead-letter queue. Messages of other runs are made visible again at the end.
The worker needs no permission on the dead-letter queue; this command does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from ctr_inference.errors import CtrError, MessageError
from ctr_inference.messages import (
    incoming_partition_name,
    is_s3_event,
    parse_request,
    run_id_for,
    s3_event_objects,
)
from ctr_inference.runs import RunLocation, delete_failure, read_incoming_pin
from ctr_inference.status import dead_letter_queue_url

logger = logging.getLogger(__name__)

# Dead-lettered messages stay invisible this long while the scan runs. The scan
# stops at the first message it has already seen, so a longer scan ends early
# instead of looping.
SCAN_VISIBILITY_SECONDS = 300


@dataclass
class RedriveResult:
    """Partitions that one redrive moved, and the messages it left."""

    run_id: str
    dead_letter_queue_url: str
    moved: list[str] = field(default_factory=list)
    other_messages: int = 0
    unreadable_messages: int = 0


@dataclass(frozen=True)
class Target:
    """One partition that a queue message names, and the run it belongs to."""

    run_id: str
    location: RunLocation
    partition: str


def message_targets(body: str, s3=None, predictions_bucket: str = "") -> list[Target]:
    """Return the partitions a message names, each with its run.

    An S3 event maps to the run its date is pinned to, which needs ``s3`` and
    ``predictions_bucket``. An object of a date without a pin maps to no run.

    Raises:
        MessageError: the body is neither a score request nor an S3 event.
    """
    try:
        document = json.loads(body)
    except json.JSONDecodeError as error:
        raise MessageError(f"message body is not JSON: {error}") from error
    if not is_s3_event(document):
        request = parse_request(body)
        return [Target(request.run_id, RunLocation.of_request(request), request.partition)]
    targets = []
    for item in s3_event_objects(document):
        pin = read_incoming_pin(s3, predictions_bucket, item.dt) if s3 and predictions_bucket else None
        if pin:
            run_id = run_id_for(item.dt, pin["model"]["version"])
            targets.append(Target(run_id, RunLocation(predictions_bucket, item.dt, run_id),
                                  incoming_partition_name(item.key, item.dt)))
    return targets


def redrive(sqs, queue_url: str, run_id: str, s3=None, predictions_bucket: str = "",
            dead_letter_queue: str | None = None, dry_run: bool = False) -> RedriveResult:
    """Move the dead-lettered messages of ``run_id`` back to ``queue_url``.

    Failure records of the moved partitions are deleted, so ``ctr status``
    counts them as pending again. With ``dry_run`` nothing is moved and the
    result lists what would be.

    Raises:
        CtrError: the queue has no dead-letter queue and none was given.
    """
    dlq = dead_letter_queue or dead_letter_queue_url(sqs, queue_url)
    if not dlq:
        raise CtrError(f"queue {queue_url} has no redrive policy; give the dead-letter queue URL")
    result = RedriveResult(run_id, dlq)
    seen: set[str] = set()
    others: list[dict] = []
    while True:
        messages = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       VisibilityTimeout=SCAN_VISIBILITY_SECONDS).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in seen]
        others.extend(m for m in messages if m["MessageId"] in seen)
        if not fresh:
            break
        for message in fresh:
            seen.add(message["MessageId"])
            try:
                targets = [t for t in message_targets(message["Body"], s3, predictions_bucket)
                           if t.run_id == run_id]
            except MessageError as error:
                logger.warning("dead-lettered message %s is not a score request, leaving it: %s",
                               message["MessageId"], error)
                result.unreadable_messages += 1
                others.append(message)
                continue
            if not targets:
                result.other_messages += 1
                others.append(message)
                continue
            result.moved.extend(t.partition for t in targets)
            if dry_run:
                others.append(message)
                continue
            sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
            if s3 is not None:
                for target in targets:
                    delete_failure(s3, target.location, target.partition)

    for start in range(0, len(others), 10):
        batch = others[start:start + 10]
        sqs.change_message_visibility_batch(QueueUrl=dlq, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(batch)])
    logger.info("%s %d dead-lettered partitions of run %s to %s; left %d messages of other runs",
                "would move" if dry_run else "moved", len(result.moved), run_id, queue_url,
                result.other_messages, extra={"run_id": run_id})
    return result
