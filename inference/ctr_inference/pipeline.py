"""Overlap the worker's I/O with scoring: a prefetch stage and an upload stage, one item each.

The scoring thread works on partition N while two background threads move
the neighbours:

- ``Prefetcher`` receives message N+1 and downloads and decodes its input.
  ``take`` returns that result and starts the next fetch, so at most one
  fetched item waits ahead of the scoring thread.
- ``Uploader`` writes the output of partition N-1, finalizes its run and
  deletes its message. ``submit`` waits while the previous upload still
  runs, so at most one upload is pending.

Both stages take plain callables, so the worker owns every SQS and S3 call
and these classes own only the threads and the hand-over between them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import pyarrow as pa

from ctr_inference.leases import Lease
from ctr_inference.messages import ScoreRequest
from ctr_inference.scorer import Scorer

T = TypeVar("T")


@dataclass
class PartitionTask:
    """One partition of a message on its way through the stages: input, then predictions, then output."""

    request: ScoreRequest
    scorer: Scorer
    # When the work on this partition began: wall-clock time (recorded in its output) and time.monotonic().
    started_at: float
    started: float
    # The decoded input; dropped once the predictions exist, so a stage keeps one of the two.
    table: pa.Table | None = None
    predictions: pa.Table | None = None
    # Seconds spent fetching, decoding and scoring, without time waiting between stages.
    work_seconds: float = 0.0


@dataclass
class MessageTask:
    """A received message and its partitions; an S3 test event or marker file has none."""

    lease: Lease
    partitions: list[PartitionTask] = field(default_factory=list)


class Prefetcher(Generic[T]):
    """Runs ``fetch`` on a background thread, one call ahead of the consumer.

    ``take`` returns an item and at once starts fetching the next one, which
    runs while the consumer works. When a fetch hands over nothing, no
    further fetch runs until the next ``take``, so an idle consumer leaves
    no receive in flight.

    ``fetch`` returns an item, or None when there is nothing to hand over
    (an empty receive, or a message it already failed). It must not raise,
    because an item it owned would then belong to no one.

    After ``stop``, an item that ``take`` did not return goes to
    ``discard``: at once when it is ready, otherwise as soon as its fetch
    returns. Every item therefore ends up either returned by ``take`` or
    passed to ``discard``, never both.
    """

    def __init__(self, fetch: Callable[[], T | None], discard: Callable[[T], None], name: str = "prefetch"):
        self._fetch = fetch
        self._discard = discard
        self._lock = threading.Lock()
        self._ready: T | None = None
        self._stopped = False
        self._call: Future | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def take(self) -> T | None:
        """Return the item fetched ahead, or fetch one now, then start fetching the next one.

        Returns None when the fetch handed over nothing, and after ``stop``.
        """
        with self._lock:
            if self._stopped:
                return None
            if self._call is None:
                self._call = self._executor.submit(self._fetch_one)
            call = self._call
        call.result()
        with self._lock:
            self._call = None
            item, self._ready = self._ready, None
            if self._stopped:
                return None
            if item is not None:
                self._call = self._executor.submit(self._fetch_one)
        return item

    def stop(self) -> None:
        """Start no more fetches and discard the ready item; returns without waiting for a fetch in flight."""
        with self._lock:
            self._stopped = True
            item, self._ready = self._ready, None
        if item is not None:
            self._discard(item)

    def close(self) -> None:
        """Stop, then wait for the fetch in flight, whose item goes to ``discard``."""
        self.stop()
        self._executor.shutdown(wait=True)

    def _fetch_one(self) -> None:
        item = self._fetch()
        if item is None:
            return
        with self._lock:
            if not self._stopped:
                self._ready = item
                return
        self._discard(item)


class Uploader(Generic[T]):
    """Runs ``upload`` on a background thread, one item at a time, in the order submitted.

    ``upload`` must not raise: it handles its own failures, because the
    scoring thread has moved on by the time it runs.
    """

    def __init__(self, upload: Callable[[T], None], name: str = "upload"):
        self._upload = upload
        self._pending: Future | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, item: T) -> float:
        """Wait until the previous upload has finished, start this one and return the seconds waited."""
        waited = self.wait()
        self._pending = self._executor.submit(self._upload, item)
        return waited

    def wait(self) -> float:
        """Wait for the pending upload, if any, and return the seconds waited."""
        if self._pending is None:
            return 0.0
        started = time.monotonic()
        self._pending.result()
        self._pending = None
        return time.monotonic() - started

    def close(self) -> None:
        """Wait for the pending upload and stop the thread."""
        self.wait()
        self._executor.shutdown(wait=True)
