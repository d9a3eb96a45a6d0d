"""Leases on received SQS messages: visibility heartbeat, delete and release.

A lease exists from the moment a message is received until it is deleted or
released. One heartbeat thread extends the visibility timeout of every held
lease, so a worker may hold more than one message (receiving ahead) without
another thread per message. Delete and release take the same lock, so a
message released on shutdown is never deleted afterwards by the scoring
thread, and a deleted message is never released.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

# ChangeMessageVisibilityBatch accepts at most 10 entries.
SQS_BATCH = 10


@dataclass
class Lease:
    """One received message that this worker holds."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    received_at: float = field(default_factory=time.monotonic)
    # Log fields of the partition being scored: run_id, partition, model_version.
    context: dict = field(default_factory=dict)
    rows: int | None = None
    # time.monotonic() when the worker began processing it; None while it waits in the prefetch stage.
    started: float | None = None
    overdue_logged: bool = False

    @property
    def age(self) -> float:
        return time.monotonic() - self.received_at

    @property
    def seconds_since_start(self) -> float | None:
        return None if self.started is None else time.monotonic() - self.started

    def log_fields(self) -> dict:
        return dict(self.context, message_id=self.message_id, receive_count=self.receive_count)


class LeaseKeeper:
    """Holds the leases of one worker and keeps their messages invisible while they are held."""

    def __init__(self, sqs, queue_url: str, visibility_timeout: int, heartbeat_seconds: float,
                 max_hold_seconds: float, on_change=None):
        self._sqs, self._queue_url = sqs, queue_url
        self._visibility_timeout = visibility_timeout
        self._heartbeat_seconds = heartbeat_seconds
        self._max_hold_seconds = max_hold_seconds
        self._on_change = on_change or (lambda count: None)
        self._leases: dict[str, Lease] = {}
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    # Lifecycle ----------------------------------------------------------------

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def lock(self) -> threading.RLock:
        """The lock that delete and release hold; the shutdown path holds it until the process exits."""
        return self._lock

    # Leases -----------------------------------------------------------------------

    def add(self, message: dict) -> Lease:
        attributes = message.get("Attributes", {})
        lease = Lease(message_id=message["MessageId"], receipt_handle=message["ReceiptHandle"],
                      body=message.get("Body", ""),
                      receive_count=int(attributes.get("ApproximateReceiveCount", "1")))
        with self._lock:
            self._leases[lease.message_id] = lease
            self._on_change(len(self._leases))
        return lease

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._leases.values())

    def is_held(self, lease: Lease) -> bool:
        with self._lock:
            return self._leases.get(lease.message_id) is lease

    def _drop(self, lease: Lease) -> None:
        self._leases.pop(lease.message_id, None)
        self._on_change(len(self._leases))

    def delete(self, lease: Lease) -> bool:
        """Delete the message if its lease is still held, and return whether it was deleted.

        Raises:
            botocore.exceptions.ClientError: SQS rejected the delete; the lease stays held.
        """
        with self._lock:
            if not self.is_held(lease):
                return False
            self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=lease.receipt_handle)
            self._drop(lease)
            return True

    def release(self, lease: Lease, delay: int = 0) -> bool:
        """Make the message visible again after ``delay`` seconds; the receive still counts.

        Returns whether SQS accepted the release. When it did not, the message
        reappears anyway once its visibility timeout ends.
        """
        with self._lock:
            if not self.is_held(lease):
                return False
            self._drop(lease)
            try:
                self._sqs.change_message_visibility(QueueUrl=self._queue_url,
                                                    ReceiptHandle=lease.receipt_handle,
                                                    VisibilityTimeout=int(delay))
            except Exception as error:  # noqa: BLE001 - the visibility timeout releases it anyway
                logger.warning("release of message %s failed, it reappears after its visibility "
                               "timeout: %s", lease.message_id, error, extra=lease.log_fields())
                return False
            return True

    def release_all(self) -> list[Lease]:
        """Release every held message at once (visibility 0) and return the leases released."""
        with self._lock:
            leases = list(self._leases.values())
            for lease in leases:
                self.release(lease, 0)
            return leases

    # Heartbeat ------------------------------------------------------------------------

    def extend_all(self) -> None:
        """Extend the visibility timeout of every held message that is within its hold limit."""
        with self._lock:
            leases = list(self._leases.values())
        due = []
        for lease in leases:
            if lease.age <= self._max_hold_seconds:
                due.append(lease)
            elif not lease.overdue_logged:
                lease.overdue_logged = True
                logger.error("message held for %.0f s, above MAX_PARTITION_SECONDS %.0f s; no longer "
                             "extending its visibility timeout, so it returns to the queue",
                             lease.age, self._max_hold_seconds, extra=lease.log_fields())
        for start in range(0, len(due), SQS_BATCH):
            batch = due[start:start + SQS_BATCH]
            try:
                response = self._sqs.change_message_visibility_batch(
                    QueueUrl=self._queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": lease.receipt_handle,
                              "VisibilityTimeout": self._visibility_timeout}
                             for i, lease in enumerate(batch)],
                )
            except Exception as error:  # noqa: BLE001 - retried at the next heartbeat
                logger.warning("visibility extension of %d messages failed, retrying in %.0f s: %s",
                               len(batch), self._heartbeat_seconds, error)
                continue
            for item in response.get("Failed", []):
                lease = batch[int(item["Id"])]
                if self.is_held(lease):
                    logger.warning("visibility extension failed: %s: %s", item.get("Code"),
                                   item.get("Message"), extra=lease.log_fields())

    def _run(self) -> None:
        while not self._stopped.wait(self._heartbeat_seconds):
            self.extend_all()
