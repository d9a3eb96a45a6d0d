"""Runs: idempotent dispatch, the manifest and its sanity check, and runs fed by S3 event notifications."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from ctr_inference.dispatch import dispatch
from ctr_inference.model_source import bundle_uri, upload_bundle
from ctr_inference.runs import FAILED, MANIFEST, RUN_PLAN, SUCCESS, incoming_pin_key

from tests.helpers import feature_table
from tests.worker.harness import (
    IMAGE_DIGEST,
    IMAGE_REF,
    assert_exactly_once,
    dispatch_partitions,
    put_partition,
    read_run_outputs,
    run_cli,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration


def test_dispatch_is_idempotent(infra, pool, bundles, tmp_path):
    dt = "2026-05-01"
    run_id, input_ids = dispatch_partitions(infra, dt, partitions=3, rows=40)
    location = infra.run(run_id)
    plan = infra.get_json(location.bucket, location.key(RUN_PLAN))
    assert sorted(plan["inputs"]) == ["part-00000", "part-00001", "part-00002"]
    assert plan["model"] == {"name": "tiny", "version": "1"}
    worker = pool.start(worker_env(infra, bundles["1"], tmp_path, EXIT_WHEN_IDLE_SECONDS=3))
    assert worker.wait(90) == 0
    assert infra.exists(location.bucket, location.key(SUCCESS))
    assert_exactly_once(read_run_outputs(infra, run_id), input_ids)

    manifest = infra.get_json(location.bucket, location.key(MANIFEST))
    assert [p["name"] for p in manifest["partitions"]] == ["part-00000", "part-00001", "part-00002"]
    assert manifest["rows"] == 120
    assert manifest["model"] == {"name": "tiny", "version": "1"}
    assert manifest["model_versions"] == ["1"]
    assert manifest["image_references"] == [
        {"image_ref": IMAGE_REF.format(version="1"), "image_digest": IMAGE_DIGEST, "partitions": 3}]
    assert manifest["timings"]["dispatched_at"] == plan["dispatched_at"]
    assert manifest["timings"]["rows_per_second"] > 0
    assert manifest["sanity"]["passed"] is True

    again = dispatch(infra.s3, infra.sqs, infra.queue_url, infra.features, infra.predictions, dt, "tiny", "1")
    assert (again.sent, len(again.skipped)) == ([], 3)
    assert infra.queue_counts() == (0, 0)
    assert infra.exists(location.bucket, location.key(SUCCESS))

    # A worker that died between its output and the manifest: dispatch finalizes the run.
    infra.s3.delete_object(Bucket=location.bucket, Key=location.key(SUCCESS))
    infra.s3.delete_object(Bucket=location.bucket, Key=location.key(MANIFEST))
    healed = dispatch(infra.s3, infra.sqs, infra.queue_url, infra.features, infra.predictions, dt, "tiny", "1")
    assert healed.sent == []
    assert healed.completion == "succeeded"
    assert infra.exists(location.bucket, location.key(SUCCESS))

    put_partition(infra, f"features/dt={dt}/part-00003.parquet", feature_table(40, seed=3, start_row_id=121))
    cli = ["dispatch", "--dt", dt, "--model-version", "1", "--model-name", "tiny", "--queue-url", infra.queue_url,
           "--features-bucket", infra.features, "--predictions-bucket", infra.predictions]
    added = run_cli(*cli)
    assert added.returncode == 0, added.stderr
    assert "1 partitions queued, 3 already scored" in added.stdout
    assert not infra.exists(location.bucket, location.key(SUCCESS))
    assert len(infra.get_json(location.bucket, location.key(RUN_PLAN))["inputs"]) == 4
    assert infra.queue_counts() == (1, 0)

    forced = run_cli(*cli, "--force")
    assert "4 partitions queued, 0 already scored" in forced.stdout
    assert infra.queue_counts() == (5, 0)
    assert infra.get_json(location.bucket, location.key(RUN_PLAN))["generation"] == 1

    # Old outputs of the forced run do not count: the run completes once, after all four are rewritten.
    rerun = pool.start(worker_env(infra, bundles["1"], tmp_path, EXIT_WHEN_IDLE_SECONDS=3), "rerun")
    assert rerun.wait(90) == 0
    completions = [r for r in rerun.records() if r["message"].startswith("run complete")]
    assert len(completions) == 1
    manifest = infra.get_json(location.bucket, location.key(MANIFEST))
    assert manifest["generation"] == 1
    assert [p["generation"] for p in manifest["partitions"]] == [1, 1, 1, 1]
    assert infra.exists(location.bucket, location.key(SUCCESS))


def test_dispatch_defaults_to_latest_store_version(infra, bundles):
    for version, path in bundles.items():
        upload_bundle(path, bundle_uri(infra.resources.model_store_uri, "tiny", version), client=infra.s3)
    put_partition(infra, "features/dt=2026-05-02/part-00000.parquet", feature_table(10))
    completed = run_cli("dispatch", "--dt", "2026-05-02", "--model-name", "tiny", "--queue-url", infra.queue_url,
                        "--features-bucket", infra.features, "--predictions-bucket", infra.predictions,
                        "--model-store-uri", infra.resources.model_store_uri,
                        env=dict(os.environ, MODEL_VERSION=""))
    assert completed.returncode == 0, completed.stderr
    assert "run 2026-05-02.v2: 1 partitions queued" in completed.stdout
    assert "highest version of tiny" in completed.stderr


def test_sanity_check_failure_writes_failed(infra, pool, bundles, tmp_path):
    run_id, _ = dispatch_partitions(infra, "2026-05-03", partitions=2, rows=40)
    location = infra.run(run_id)
    worker = pool.start(worker_env(infra, bundles["1"], tmp_path, EXIT_WHEN_IDLE_SECONDS=3,
                                   SANITY_MAX_MEAN_CTR=0.05))
    assert worker.wait(90) == 0

    assert not infra.exists(location.bucket, location.key(SUCCESS))
    marker = infra.get_json(location.bucket, location.key(FAILED))
    assert [f["bound"] for f in marker["failures"]] == ["SANITY_MAX_MEAN_CTR"]
    assert marker["failures"][0]["value"] > 0.05
    manifest = infra.get_json(location.bucket, location.key(MANIFEST))
    assert manifest["sanity"]["passed"] is False
    assert manifest["sanity"]["bounds"]["SANITY_MAX_MEAN_CTR"] == 0.05

    status = json.loads(run_cli("status", run_id, "--predictions-bucket", infra.predictions).stdout)
    assert status["state"] == "sanity_failed"
    assert "SANITY_MAX_MEAN_CTR" in status["sanity_failures"][0]["message"]


def enable_incoming_notifications(infra) -> None:
    """Send ObjectCreated events for ``incoming/`` keys of the features bucket to the scoring queue."""
    arn = infra.sqs.get_queue_attributes(QueueUrl=infra.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    infra.s3.put_bucket_notification_configuration(Bucket=infra.features, NotificationConfiguration={
        "QueueConfigurations": [{
            "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
        }],
    })


def test_s3_notifications_feed_pinned_run(infra, pool, bundles, tmp_path):
    dt = "2026-05-04"
    run_id = f"{dt}.v1"
    location = infra.run(run_id)
    enable_incoming_notifications(infra)
    first = pool.start(worker_env(infra, bundles["1"], tmp_path), "baked-v1")
    tables = {
        "incoming-batch one": feature_table(30, seed=1, start_row_id=1),
        "incoming-nested__b": feature_table(30, seed=2, start_row_id=31),
    }
    put_partition(infra, f"incoming/dt={dt}/batch one.parquet", tables["incoming-batch one"])
    put_partition(infra, f"incoming/dt={dt}/nested/b.parquet", tables["incoming-nested__b"])
    put_partition(infra, f"incoming/dt={dt}/_SUCCESS", b"")
    put_partition(infra, f"features/dt={dt}/part-00000.parquet", feature_table(30, seed=3))

    wait_until(lambda: infra.exists(location.bucket, location.key(SUCCESS)), 60, f"{SUCCESS} of {run_id}",
               diagnostics=pool.tails)
    ids = np.concatenate([t.column("row_id").to_numpy() for t in tables.values()])
    assert_exactly_once(read_run_outputs(infra, run_id), ids)
    for partition in tables:
        assert infra.exists(location.bucket, location.output_key(partition))
    pin = infra.get_json(infra.predictions, incoming_pin_key(dt))
    assert (pin["run_id"], pin["model"]["version"]) == (run_id, "1")
    acknowledged = [r for r in first.records() if "without data objects" in r["message"]]
    assert len(acknowledged) == 2  # the s3:TestEvent and the _SUCCESS marker
    wait_until(lambda: infra.queue_counts() == (0, 0), 10, "queue empty")
    assert infra.queue_counts(infra.dlq_url) == (0, 0)

    # A rolling update: a worker baked with version 2 scores the date's next object with version 1.
    first.stop()
    upload_bundle(bundles["1"], bundle_uri(infra.resources.model_store_uri, "tiny", "1"), client=infra.s3)
    second = pool.start(worker_env(infra, bundles["2"], tmp_path), "baked-v2")
    late = feature_table(30, seed=4, start_row_id=61)
    put_partition(infra, f"incoming/dt={dt}/c.parquet", late)
    wait_until(lambda: infra.get_json(location.bucket, location.key(MANIFEST))["partition_count"] == 3, 60,
               "manifest with the late object", diagnostics=pool.tails)
    output = pq.read_table(io.BytesIO(infra.s3.get_object(
        Bucket=location.bucket, Key=location.output_key("incoming-c"))["Body"].read()))
    assert set(output.column("model_version").to_pylist()) == {"1"}
    assert output.schema.metadata[b"ctr.image_ref"].decode() == IMAGE_REF.format(version="2")
    assert infra.exists(location.bucket, location.key(SUCCESS))
    assert any("loaded model tiny version 1 from the model store" in r["message"] for r in second.records())
    assert_exactly_once(read_run_outputs(infra, run_id), np.concatenate([ids, late.column("row_id").to_numpy()]))
    status = json.loads(run_cli("status", run_id, "--predictions-bucket", infra.predictions).stdout)
    assert (status["model_name"], status["model_version"]) == ("tiny", "1")
    assert (status["state"], status["expected"], status["done"], status["rows"]) == ("succeeded", 3, 3, 90)
