"""Messages that fail: the dead-letter queue, failure records, ``ctr status``, ``ctr redrive`` and bad inputs.

The queue's maxReceiveCount is 5 and workers release a failed message with a
1 s back-off, so a poison message reaches the dead-letter queue after five
deliveries while the other partitions keep flowing.
"""

from __future__ import annotations

import io
import json

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ctr_inference.bundle import load_bundle
from ctr_inference.dispatch import dispatch
from ctr_inference.messages import make_request
from ctr_inference.runs import FAILED, SUCCESS, FailureRecord, RunLocation, write_failure
from ctr_inference.scorer import Scorer

from tests.helpers import feature_table
from tests.worker.harness import (
    WorkerPool,
    assert_exactly_once,
    parquet_bytes,
    provision,
    put_partition,
    read_run_outputs,
    run_cli,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration

MAX_RECEIVE_COUNT = 5


def status_json(infra, run_id: str) -> dict:
    completed = run_cli("status", run_id, "--predictions-bucket", infra.predictions, "--queue-url", infra.queue_url)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_poison_partition_dead_lettered_then_redriven(infra, pool, bundles, tmp_path):
    dt = "2026-04-01"
    good = [feature_table(50, seed=i, start_row_id=1 + 50 * i) for i in range(3)]
    for index, table in enumerate(good):
        put_partition(infra, f"features/dt={dt}/part-{index:05d}.parquet", table)
    fixed = feature_table(50, seed=3, start_row_id=151)
    poison_key = f"features/dt={dt}/part-00003.parquet"
    put_partition(infra, poison_key, fixed.drop_columns(["f_cat"]))
    run_id = dispatch(infra.s3, infra.sqs, infra.queue_url, infra.features, infra.predictions, dt,
                      "tiny", "1").run_id
    env = worker_env(infra, bundles["1"], tmp_path)
    pool.start(env)
    pool.start(env)

    wait_until(lambda: infra.queue_counts(infra.dlq_url)[0] == 1, 90, "poison message in the dead-letter queue",
               diagnostics=pool.tails)
    location = infra.run(run_id)
    good_ids = np.concatenate([t.column("row_id").to_numpy() for t in good])
    assert_exactly_once(read_run_outputs(infra, run_id), good_ids)
    assert not infra.exists(location.bucket, location.key(SUCCESS))
    assert not infra.exists(location.bucket, location.key(FAILED))
    assert infra.queue_counts() == (0, 0)

    status = status_json(infra, run_id)
    assert status["state"] == "blocked"
    assert (status["done"], status["failed"], status["pending"]) == (3, 1, 0)
    assert status["dead_lettered"] == 1
    assert status["dead_letter_queue_depth"] == 1
    assert status["rows"] == 150
    [failure] = status["failures"]
    assert failure["partition"] == "part-00003"
    assert failure["reason"] == "missing_column"
    assert "'f_cat'" in failure["error"]
    assert failure["receive_count"] == MAX_RECEIVE_COUNT

    errors = [r for r in pool.records() if r.get("partition") == "part-00003" and r["level"] == "error"]
    assert sorted(r["receive_count"] for r in errors) == [1, 2, 3, 4, 5]
    assert all(r["run_id"] == run_id and "f_cat" in r["message"] for r in errors)

    put_partition(infra, poison_key, fixed)
    redriven = run_cli("redrive", run_id, "--queue-url", infra.queue_url, "--predictions-bucket", infra.predictions)
    assert redriven.returncode == 0, redriven.stderr
    assert "moved 1 dead-lettered partitions" in redriven.stdout
    wait_until(lambda: infra.exists(location.bucket, location.key(SUCCESS)), 60, f"{SUCCESS} after the redrive",
               diagnostics=pool.tails)
    assert_exactly_once(read_run_outputs(infra, run_id), np.concatenate([good_ids, fixed.column("row_id").to_numpy()]))
    assert infra.queue_counts(infra.dlq_url) == (0, 0)
    assert status_json(infra, run_id)["state"] == "succeeded"


def test_redrive_leaves_other_runs(infra):
    """Only the named run's messages move; the other run's stay in the dead-letter queue."""
    requests = [make_request(f"s3://{infra.features}/features/dt={dt}/part-00000.parquet", dt, "tiny", "1",
                             infra.predictions) for dt in ("2026-04-02", "2026-04-03")]
    for request in requests:
        infra.sqs.send_message(QueueUrl=infra.dlq_url, MessageBody=request.to_json())
        write_failure(infra.s3, RunLocation.of_request(request), FailureRecord(
            request.run_id, request.partition, "corrupt_parquet", "damaged", 5, 5, True))

    dry = run_cli("redrive", "2026-04-02.v1", "--queue-url", infra.queue_url, "--dry-run")
    assert "would move 1" in dry.stdout
    assert infra.queue_counts() == (0, 0)
    moved = run_cli("redrive", "2026-04-02.v1", "--queue-url", infra.queue_url,
                    "--predictions-bucket", infra.predictions)
    assert "moved 1" in moved.stdout
    assert "left 1 messages of other runs" in moved.stdout
    assert infra.queue_counts() == (1, 0)
    assert infra.queue_counts(infra.dlq_url) == (1, 0)
    body = json.loads(infra.sqs.receive_message(QueueUrl=infra.queue_url)["Messages"][0]["Body"])
    assert body["run_id"] == "2026-04-02.v1"
    moved_location = RunLocation.of_request(requests[0])
    kept_location = RunLocation.of_request(requests[1])
    assert not infra.exists(moved_location.bucket, moved_location.failure_key("part-00000"))
    assert infra.exists(kept_location.bucket, kept_location.failure_key("part-00000"))


# Bad and unusual inputs, all in one run scored by two workers ---------------------------

DT = "2026-04-10"
RUN_ID = f"{DT}.v1"
GOOD = ("part-00000", "part-00001", "part-00002", "part-00003")
EMPTY = "part-00004"
BAD = {
    "part-00005": ("corrupt_parquet", "damaged Parquet"),
    "part-00006": ("missing_column", "'f_num_b'"),
    "part-00007": ("wrong_dtype", "'f_cat'"),
    "part-00008": ("missing_input", "does not exist"),
    "part-00009": ("unknown_format", "is not Parquet"),
}
INVALID_MESSAGES = ("this is not JSON", json.dumps({"type": "ctr.score-request", "version": 99}))


def exact_table(rows: int, seed: int, start_row_id: int) -> pa.Table:
    """A feature table whose values survive a float32 round trip, so cast columns score identically."""
    table = feature_table(rows, seed=seed, start_row_id=start_row_id, label=False)
    rounded = np.round(table.column("f_num_a").to_numpy(zero_copy_only=False) * 4) / 4
    mask = table.column("f_num_a").is_null().to_numpy(zero_copy_only=False)
    return table.set_column(1, "f_num_a", pa.array(rounded, mask=mask))


@pytest.fixture(scope="module")
def input_run(aws_endpoint, bundles, tmp_path_factory):
    """Upload every input case, dispatch the run, and let two workers process it until the bad ones are dead-lettered."""
    tmp_path = tmp_path_factory.mktemp("inputs")
    infra = provision(boto3.client("s3"), boto3.client("sqs"), max_receive_count=MAX_RECEIVE_COUNT)
    canonical = {name: exact_table(40, seed=10 + i, start_row_id=1 + 1000 * i) for i, name in enumerate(GOOD)}
    stored = dict(canonical)
    stored["part-00001"] = canonical["part-00001"].select(list(reversed(canonical["part-00001"].column_names)))
    stored["part-00002"] = canonical["part-00002"].append_column("note", pa.array(["x"] * 40)).append_column(
        "f_unused", pa.array(np.arange(40, dtype=np.float64)))
    casts = canonical["part-00003"]
    stored["part-00003"] = pa.table({
        "f_cat": casts.column("f_cat").cast(pa.int32()),
        "row_id": casts.column("row_id"),
        "f_num_b": casts.column("f_num_b").cast(pa.int32()),
        "f_num_a": casts.column("f_num_a").cast(pa.float32()),
    })
    stored[EMPTY] = feature_table(0, seed=1)
    valid = parquet_bytes(feature_table(40, seed=5, start_row_id=5001))
    stored["part-00005"] = valid[: len(valid) // 2]
    stored["part-00006"] = feature_table(40, seed=6, start_row_id=6001).drop_columns(["f_num_b"])
    wrong = feature_table(40, seed=7, start_row_id=7001)
    stored["part-00007"] = wrong.set_column(3, "f_cat", pa.array([str(v) for v in wrong.column("f_cat").to_pylist()]))
    stored["part-00008"] = feature_table(40, seed=8, start_row_id=8001)
    stored["part-00009"] = b"row_id,f_num_a,f_num_b,f_cat\n1,0.5,3,50\n"
    for name, content in stored.items():
        put_partition(infra, f"features/dt={DT}/{name}.parquet", content)
    dispatch(infra.s3, infra.sqs, infra.queue_url, infra.features, infra.predictions, DT, "tiny", "1")
    infra.s3.delete_object(Bucket=infra.features, Key=f"features/dt={DT}/part-00008.parquet")
    for body in INVALID_MESSAGES:
        infra.sqs.send_message(QueueUrl=infra.queue_url, MessageBody=body)

    pool = WorkerPool(tmp_path / "logs")
    try:
        env = worker_env(infra, bundles["1"], tmp_path)
        pool.start(env)
        pool.start(env)
        expected_dead = len(BAD) + len(INVALID_MESSAGES)
        wait_until(lambda: infra.queue_counts(infra.dlq_url)[0] == expected_dead and infra.queue_counts() == (0, 0),
                   120, f"{expected_dead} messages dead-lettered and the queue empty", diagnostics=pool.tails)
    finally:
        pool.stop_all()
    return infra, canonical, pool.records()


def output_table(infra, partition: str) -> pa.Table:
    location = infra.run(RUN_ID)
    body = infra.s3.get_object(Bucket=location.bucket, Key=location.output_key(partition))["Body"].read()
    return pq.read_table(io.BytesIO(body))


@pytest.mark.parametrize("partition", GOOD)
def test_valid_inputs_score_like_canonical(input_run, bundles, partition):
    infra, canonical, _ = input_run
    expected = Scorer(load_bundle(bundles["1"]), threads=1).predict(canonical[partition])
    output = output_table(infra, partition).sort_by("row_id")
    assert output.column("row_id").to_pylist() == canonical[partition].column("row_id").to_pylist()
    np.testing.assert_array_equal(output.column("ctr").to_numpy(), expected)
    assert set(output.column("model_version").to_pylist()) == {"1"}


def test_empty_partition_gives_empty_output(input_run):
    infra, _, records = input_run
    output = output_table(infra, EMPTY)
    assert output.num_rows == 0
    assert output.column_names == ["row_id", "ctr", "model_version"]
    assert not [r for r in records if r.get("partition") == EMPTY and r["level"] == "error"]


@pytest.mark.parametrize("partition", sorted(BAD))
def test_bad_input_dead_lettered_with_reason(input_run, partition):
    infra, _, _ = input_run
    reason, text = BAD[partition]
    location = infra.run(RUN_ID)
    assert not infra.exists(location.bucket, location.output_key(partition))
    record = infra.get_json(location.bucket, location.failure_key(partition))
    assert record["reason"] == reason
    assert text in record["error"]
    assert record["receive_count"] == MAX_RECEIVE_COUNT
    assert record["dead_lettered"] is True


@pytest.mark.parametrize("partition", sorted(BAD))
def test_each_failure_logged_once(input_run, partition):
    _, _, records = input_run
    reason, text = BAD[partition]
    errors = [r for r in records if r.get("partition") == partition and r["level"] == "error"]
    assert sorted(r["receive_count"] for r in errors) == list(range(1, MAX_RECEIVE_COUNT + 1))
    for record in errors:
        assert record["run_id"] == RUN_ID
        assert record["reason"] == reason
        assert text in record["message"]


def test_invalid_messages_dead_lettered(input_run):
    infra, _, records = input_run
    invalid = [r for r in records if r.get("reason") == "invalid_message"]
    assert len(invalid) == len(INVALID_MESSAGES) * MAX_RECEIVE_COUNT
    bodies = set()
    for _ in range(5):
        for message in infra.sqs.receive_message(QueueUrl=infra.dlq_url, MaxNumberOfMessages=10,
                                                 VisibilityTimeout=0).get("Messages", []):
            bodies.add(message["Body"])
    assert set(INVALID_MESSAGES) <= bodies


def test_failed_partitions_block_success(input_run):
    infra, _, _ = input_run
    location = infra.run(RUN_ID)
    assert not infra.exists(location.bucket, location.key(SUCCESS))
    status = status_json(infra, RUN_ID)
    assert status["state"] == "blocked"
    assert (status["done"], status["failed"], status["pending"]) == (len(GOOD) + 1, len(BAD), 0)
    assert {f["partition"]: f["reason"] for f in status["failures"]} == {k: v[0] for k, v in BAD.items()}
