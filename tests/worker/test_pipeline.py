"""The prefetch and upload stages: their classes alone, then the real worker with ``PREFETCH`` on and off.

The class tests drive ``Prefetcher`` and ``Uploader`` with plain Python
callables. The worker tests run against the session's local S3/SQS server.
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest
from ctr_inference.contract import PREDICTION, ROW_ID
from ctr_inference.errors import CtrError
from ctr_inference.pipeline import Prefetcher, Uploader
from ctr_inference.runs import SUCCESS
from ctr_inference.worker import Worker, WorkerConfig

from tests.worker.harness import (
    assert_exactly_once,
    dispatch_partitions,
    partition_records,
    put_partition,
    read_run_outputs,
    wait_until,
    worker_env,
)

# Prefetcher and Uploader with plain callables --------------------------------------------------


class CountingFetch:
    """A fetch that returns 0, 1, 2, ... and records how many calls began."""

    def __init__(self, seconds: float = 0.0, limit: int | None = None):
        self.seconds = seconds
        self.limit = limit
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            number = self.calls
            self.calls += 1
        time.sleep(self.seconds)
        if self.limit is not None and number >= self.limit:
            return None
        return number


def test_prefetcher_fetches_one_ahead():
    fetch = CountingFetch()
    prefetcher = Prefetcher(fetch, discard=lambda item: None)
    try:
        assert prefetcher.take() == 0
        time.sleep(0.2)
        # The take started exactly one more fetch, and no further fetch starts until the next take.
        assert fetch.calls == 2

        assert prefetcher.take() == 1
        assert prefetcher.take() == 2
        time.sleep(0.2)
        assert fetch.calls == 4
    finally:
        prefetcher.close()


def test_prefetcher_idle_leaves_no_fetch_running():
    fetch = CountingFetch(limit=1)
    prefetcher = Prefetcher(fetch, discard=lambda item: None)
    try:
        assert prefetcher.take() == 0
        assert prefetcher.take() is None
        time.sleep(0.2)
        # After a fetch that handed over nothing, the next one waits for the next take.
        assert fetch.calls == 2
        assert prefetcher.take() is None
        assert fetch.calls == 3
    finally:
        prefetcher.close()


def test_prefetcher_stop_discards_ready_item():
    discarded = []
    prefetcher = Prefetcher(CountingFetch(), discard=discarded.append)
    assert prefetcher.take() == 0
    wait_until(lambda: prefetcher._ready is not None, 5, "second item fetched", interval=0.01)

    prefetcher.stop()
    assert discarded == [1]
    assert prefetcher.take() is None
    prefetcher.close()
    assert discarded == [1]


def test_prefetcher_stop_discards_item_in_flight():
    discarded = []
    fetch = CountingFetch(seconds=0.5)
    prefetcher = Prefetcher(fetch, discard=discarded.append)
    assert prefetcher.take() == 0
    wait_until(lambda: fetch.calls == 2, 5, "second fetch started", interval=0.01)

    prefetcher.stop()
    # The fetch is still running, so nothing is discarded yet and stop did not wait for it.
    assert discarded == []
    assert prefetcher.take() is None
    prefetcher.close()
    assert discarded == [1]
    assert fetch.calls == 2


def test_prefetcher_take_after_stop_fetches_nothing():
    fetch = CountingFetch()
    prefetcher = Prefetcher(fetch, discard=lambda item: None)
    prefetcher.stop()
    assert prefetcher.take() is None
    prefetcher.close()
    assert fetch.calls == 0


def test_uploader_waits_for_previous_upload():
    running = []
    finished = []
    overlaps = []

    def upload(item: int) -> None:
        running.append(item)
        overlaps.append(len(running))
        time.sleep(0.3)
        running.remove(item)
        finished.append(item)

    uploader = Uploader(upload)
    assert uploader.submit(1) == 0.0
    waited = uploader.submit(2)
    # The second hand-over waited for the first upload, which takes 0.3 s.
    assert waited > 0.2
    assert finished == [1]
    uploader.close()
    assert finished == [1, 2]
    assert max(overlaps) == 1


def test_uploader_close_without_uploads():
    Uploader(lambda item: None).close()


# The worker, in this process, with an upload slower than scoring ---------------------------------


class RecordingWorker(Worker):
    """The real worker, with slow output writes and a check of every delete against S3.

    Each write sleeps first, so uploads are slower than scoring and the
    scoring thread has to wait for the upload thread.
    """

    WRITE_DELAY_SECONDS = 0.2

    def __init__(self, config: WorkerConfig, infra):
        super().__init__(config, sqs=infra.sqs, s3=infra.s3)
        self.infra = infra
        self.uploading = None
        # (partition, its output existed at the delete, messages held at the delete)
        self.deletes: list[tuple[str, bool, int]] = []

    def write_output(self, *args, **kwargs):
        time.sleep(self.WRITE_DELAY_SECONDS)
        return super().write_output(*args, **kwargs)

    def upload_message(self, task):
        self.uploading = task
        super().upload_message(task)

    def delete_message(self, lease):
        held_count = len(self.leases.held())
        for partition in self.uploading.partitions:
            bucket, key = partition.request.output_uri[len("s3://"):].split("/", 1)
            self.deletes.append((partition.request.partition, self.infra.exists(bucket, key), held_count))
        return super().delete_message(lease)


@pytest.mark.integration
def test_delete_only_after_output_written(infra, bundles, tmp_path):
    run_id, input_ids = dispatch_partitions(infra, "2026-09-10", partitions=8, rows=50)
    config = WorkerConfig(queue_url=infra.queue_url, bundle_path=str(bundles["1"]), wait_time_seconds=1,
                          visibility_timeout_seconds=30, heartbeat_seconds=5, failure_backoff_seconds=1,
                          exit_when_idle_seconds=2, scoring_threads=1, metrics_port=0,
                          cache_dir=str(tmp_path / "cache"), worker_name="recording")
    worker = RecordingWorker(config, infra)
    worker.start()
    assert worker.run() == 0

    assert_exactly_once(read_run_outputs(infra, run_id), input_ids)
    assert len(worker.deletes) == 8
    assert [partition for partition, exists, _ in worker.deletes if not exists] == []
    held_counts = [count for _, _, count in worker.deletes]
    # Never more than one message in each stage: prefetched, scored and waiting, uploading.
    assert max(held_counts) <= 3
    # The stages overlapped: while one message was deleted, the next ones were already held.
    assert max(held_counts) >= 2
    assert worker.metrics.registry.get_sample_value("ctr_worker_upload_wait_seconds_total") > 0
    assert infra.queue_counts() == (0, 0)


# Worker processes ------------------------------------------------------------------------------


def predictions_by_row(outputs) -> dict[int, float]:
    return dict(zip(outputs.column(ROW_ID).to_pylist(), outputs.column(PREDICTION).to_pylist(), strict=True))


@pytest.mark.integration
def test_prefetch_matches_sequential_outputs(infra, pool, bundles, tmp_path):
    prefetched_run, input_ids = dispatch_partitions(infra, "2026-09-01", partitions=8, rows=60)
    worker = pool.start(worker_env(infra, bundles["1"], tmp_path, EXIT_WHEN_IDLE_SECONDS=2), "prefetch")
    assert worker.wait(120) == 0
    sequential_run, same_ids = dispatch_partitions(infra, "2026-09-02", partitions=8, rows=60)
    worker = pool.start(worker_env(infra, bundles["1"], tmp_path, EXIT_WHEN_IDLE_SECONDS=2, PREFETCH=0),
                        "sequential")
    assert worker.wait(120) == 0

    prefetched = read_run_outputs(infra, prefetched_run)
    sequential = read_run_outputs(infra, sequential_run)
    assert_exactly_once(prefetched, input_ids)
    assert_exactly_once(sequential, same_ids)
    assert predictions_by_row(prefetched) == predictions_by_row(sequential)
    for run_id in (prefetched_run, sequential_run):
        location = infra.run(run_id)
        assert infra.exists(location.bucket, location.key(SUCCESS))
    started = [r["message"] for r in pool.records() if "receiving from" in r.get("message", "")]
    assert ["prefetching one message ahead" in message for message in started] == [True, False]
    assert infra.queue_counts() == (0, 0)


@pytest.mark.integration
def test_failed_prefetch_loses_no_partition(infra, pool, bundles, tmp_path):
    dt = "2026-09-03"
    run_id, _ = dispatch_partitions(infra, dt, partitions=5, rows=40)
    # Break two partitions after the dispatch: one input vanishes, one is cut in half.
    infra.s3.delete_object(Bucket=infra.features, Key=f"features/dt={dt}/part-00001.parquet")
    corrupt_key = f"features/dt={dt}/part-00003.parquet"
    body = infra.s3.get_object(Bucket=infra.features, Key=corrupt_key)["Body"].read()
    put_partition(infra, corrupt_key, body[: len(body) // 2])
    good_ids = np.concatenate([np.arange(1 + 40 * i, 1 + 40 * (i + 1)) for i in (0, 2, 4)])

    pool.start(worker_env(infra, bundles["1"], tmp_path))
    wait_until(lambda: infra.queue_counts(infra.dlq_url)[0] == 2 and infra.queue_counts() == (0, 0), 90,
               "both broken partitions dead-lettered and the queue empty", diagnostics=pool.tails)

    assert_exactly_once(read_run_outputs(infra, run_id), good_ids)
    location = infra.run(run_id)
    records = pool.records()
    for partition, reason in (("part-00001", "missing_input"), ("part-00003", "corrupt_parquet")):
        assert not infra.exists(location.bucket, location.output_key(partition))
        failure = infra.get_json(location.bucket, location.failure_key(partition))
        assert failure["reason"] == reason
        assert failure["receive_count"] == 5
        assert failure["dead_lettered"] is True
        errors = [r for r in records if r.get("partition") == partition and r["level"] == "error"]
        assert sorted(r["receive_count"] for r in errors) == [1, 2, 3, 4, 5]
        assert all(r["run_id"] == run_id and r["reason"] == reason for r in errors)


def prefetched(record: dict) -> bool:
    return "prefetched the message" in record.get("message", "")


@pytest.mark.integration
def test_sigterm_releases_prefetched_message(infra, pool, bundles, tmp_path):
    run_id, input_ids = dispatch_partitions(infra, "2026-09-04", partitions=2, rows=50)
    worker = pool.start(worker_env(infra, bundles["1"], tmp_path, LOG_LEVEL="DEBUG", GRACE_SECONDS=20,
                                   VISIBILITY_TIMEOUT_SECONDS=60, FAULT_DELAY_BEFORE_WRITE_SECONDS=4), "first")
    holding = worker.wait_for_record(lambda r: "holding the scored partition" in r.get("message", ""), 30,
                                     "holding a scored partition")
    waiting = worker.wait_for_record(lambda r: prefetched(r) and r.get("partition") != holding["partition"], 10,
                                     "the other partition prefetched")

    worker.signal(signal.SIGTERM)
    signalled = time.monotonic()
    # Visible again at once, not after the 60 s visibility timeout, while the first partition still waits.
    wait_until(lambda: infra.queue_counts()[0] == 1, 3, "prefetched message visible again",
               diagnostics=pool.tails)
    assert time.monotonic() - signalled < 3
    assert worker.running()
    [released] = [r for r in worker.records() if "released the prefetched partition" in r.get("message", "")]
    assert released["partition"] == waiting["partition"]
    assert released["run_id"] == run_id

    assert worker.wait(30) == 0
    location = infra.run(run_id)
    assert infra.exists(location.bucket, location.output_key(holding["partition"]))
    assert not infra.exists(location.bucket, location.output_key(waiting["partition"]))

    successor = pool.start(worker_env(infra, bundles["1"], tmp_path, EXIT_WHEN_IDLE_SECONDS=2), "successor")
    assert successor.wait(60) == 0
    assert_exactly_once(read_run_outputs(infra, run_id), input_ids)
    assert infra.exists(location.bucket, location.key(SUCCESS))
    assert [r["receive_count"] for r in partition_records(successor.records(), waiting["partition"], "rows in")] == [2]
    assert infra.queue_counts() == (0, 0)


@pytest.mark.integration
def test_drain_releases_partition_that_cannot_fit(infra, pool, bundles, tmp_path):
    """After one partition took 4 s, a second one is released at SIGTERM when the grace period is 3 s."""
    run_id, input_ids = dispatch_partitions(infra, "2026-09-05", partitions=2, rows=50)
    worker = pool.start(worker_env(infra, bundles["1"], tmp_path, GRACE_SECONDS=3, VISIBILITY_TIMEOUT_SECONDS=60,
                                   FAULT_DELAY_BEFORE_WRITE_SECONDS=4))
    first = worker.wait_for_record(lambda r: "rows in" in r.get("message", ""), 30, "first partition written")
    second = worker.wait_for_record(lambda r: "holding the scored partition" in r.get("message", "")
                                    and r.get("partition") != first["partition"], 10, "second partition scored")

    signalled = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    # Released on the estimate at once, not when the 3 s grace period ran out.
    assert time.monotonic() - signalled < 2.5
    messages = [r["message"] for r in worker.records() if r.get("partition") == second["partition"]]
    assert any("partition does not fit in the grace period: released" in m for m in messages)

    pool.start(worker_env(infra, bundles["1"], tmp_path), "successor")
    location = infra.run(run_id)
    wait_until(lambda: infra.exists(location.bucket, location.key(SUCCESS)), 60, f"{SUCCESS} of run {run_id}",
               diagnostics=pool.tails)
    assert_exactly_once(read_run_outputs(infra, run_id), input_ids)


def test_worker_config_reads_prefetch_switch():
    assert WorkerConfig.from_env({"QUEUE_URL": "http://q"}).prefetch is True
    assert WorkerConfig.from_env({"QUEUE_URL": "http://q", "PREFETCH": "0"}).prefetch is False
    assert WorkerConfig.from_env({"QUEUE_URL": "http://q", "PREFETCH": "true"}).prefetch is True
    with pytest.raises(CtrError, match="PREFETCH='maybe' is not an on/off value"):
        WorkerConfig.from_env({"QUEUE_URL": "http://q", "PREFETCH": "maybe"})
