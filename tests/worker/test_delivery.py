"""Delivery semantics with real worker processes: kill -9, SIGTERM, and the visibility heartbeat.

``FAULT_DELAY_BEFORE_WRITE_SECONDS`` pauses a worker between scoring a
partition and writing its output. A test can act during that pause, which is
the most dangerous moment to lose a pod.
"""

from __future__ import annotations

import signal
import time

import pytest
from ctr_inference.runs import SUCCESS

from tests.worker.harness import (
    assert_exactly_once,
    dispatch_partitions,
    partition_records,
    read_run_outputs,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration

HOLDING = "holding the scored partition"


def holding(record: dict) -> bool:
    return HOLDING in record.get("message", "")


def wait_for_success(infra, run_id: str, pool, timeout: float = 60) -> None:
    location = infra.run(run_id)
    wait_until(lambda: infra.exists(location.bucket, location.key(SUCCESS)), timeout,
               f"{SUCCESS} of run {run_id}", diagnostics=pool.tails)


def test_kill_9_mid_partition_redelivers(infra, pool, bundles, tmp_path):
    run_id, input_ids = dispatch_partitions(infra, "2026-03-01", partitions=3, rows=200)
    victim = pool.start(worker_env(infra, bundles["1"], tmp_path, VISIBILITY_TIMEOUT_SECONDS=3,
                                   HEARTBEAT_SECONDS=1, FAULT_DELAY_BEFORE_WRITE_SECONDS=60), "victim")
    holding_record = victim.wait_for_record(holding, 30, "holding a scored partition")
    victim.kill()
    location = infra.run(run_id)
    assert not infra.exists(location.bucket, location.output_key(holding_record["partition"]))

    survivor = pool.start(worker_env(infra, bundles["1"], tmp_path), "survivor")
    wait_for_success(infra, run_id, pool)

    assert_exactly_once(read_run_outputs(infra, run_id), input_ids)
    redelivered = partition_records(survivor.records(), holding_record["partition"], "rows in")
    assert [r["receive_count"] for r in redelivered] == [2]
    assert wait_until(lambda: infra.queue_counts() == (0, 0), 10, "queue empty") is True


def test_sigterm_finishes_partition_in_grace(infra, pool, bundles, tmp_path):
    run_id, input_ids = dispatch_partitions(infra, "2026-03-02", partitions=1, rows=100)
    worker = pool.start(worker_env(infra, bundles["1"], tmp_path, GRACE_SECONDS=20,
                                   FAULT_DELAY_BEFORE_WRITE_SECONDS=3))
    worker.wait_for_record(holding, 30, "holding a scored partition")

    signalled = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = worker.wait(30)
    seconds = time.monotonic() - signalled

    assert code == 0
    assert seconds < 20
    assert_exactly_once(read_run_outputs(infra, run_id), input_ids)
    assert infra.queue_counts() == (0, 0)
    messages = [r["message"] for r in worker.records()]
    assert any("received SIGTERM" in m for m in messages)
    assert not any("released" in m for m in messages)


def test_sigterm_releases_partition_after_grace(infra, pool, bundles, tmp_path):
    run_id, input_ids = dispatch_partitions(infra, "2026-03-03", partitions=1, rows=100)
    worker = pool.start(worker_env(infra, bundles["1"], tmp_path, GRACE_SECONDS=2,
                                   VISIBILITY_TIMEOUT_SECONDS=60, FAULT_DELAY_BEFORE_WRITE_SECONDS=60))
    holding_record = worker.wait_for_record(holding, 30, "holding a scored partition")

    signalled = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = worker.wait(30)
    seconds = time.monotonic() - signalled

    assert code == 0
    assert 1.5 < seconds < 10
    assert any("grace period over: released" in r["message"] for r in worker.records())
    # Released with visibility 0: visible now, not after the 60 s visibility timeout.
    assert wait_until(lambda: infra.queue_counts()[0] == 1, 5, "released message visible") is True

    successor = pool.start(worker_env(infra, bundles["1"], tmp_path), "successor")
    wait_for_success(infra, run_id, pool)
    assert_exactly_once(read_run_outputs(infra, run_id), input_ids)
    assert [r["receive_count"] for r in partition_records(successor.records(), holding_record["partition"], "rows in")] == [2]


def test_heartbeat_prevents_redelivery(infra, pool, bundles, tmp_path):
    run_id, input_ids = dispatch_partitions(infra, "2026-03-04", partitions=1, rows=100)
    slow = pool.start(worker_env(infra, bundles["1"], tmp_path, VISIBILITY_TIMEOUT_SECONDS=2,
                                 HEARTBEAT_SECONDS=0.5, FAULT_DELAY_BEFORE_WRITE_SECONDS=7), "slow")
    holding_record = slow.wait_for_record(holding, 30, "holding a scored partition")
    rival = pool.start(worker_env(infra, bundles["1"], tmp_path), "rival")

    wait_for_success(infra, run_id, pool, timeout=30)
    assert_exactly_once(read_run_outputs(infra, run_id), input_ids)
    # The partition took more than three visibility timeouts, yet was delivered once.
    assert partition_records(rival.records(), holding_record["partition"]) == []
    assert [r["receive_count"] for r in partition_records(slow.records(), holding_record["partition"], "rows in")] == [1]
