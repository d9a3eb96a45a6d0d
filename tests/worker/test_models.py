"""Model sources and model versions: start-up failures, the S3 source and its cache, mixed versions, compare."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from ctr_inference.bundle import MODEL_FILE, load_bundle, write_metadata
from ctr_inference.errors import BundleError
from ctr_inference.model_source import bundle_uri, open_bundle, upload_bundle
from ctr_inference.runs import MANIFEST, SUCCESS
from ctr_inference.scorer import Scorer

from tests.helpers import feature_table
from tests.worker.harness import (
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


def store_uri(infra, version: str) -> str:
    return bundle_uri(infra.resources.model_store_uri, "tiny", version)


def broken_bundles(infra, bundles, tmp_path) -> dict:
    """Bundles that must stop a worker at start-up, by case: (MODEL_SOURCE, location, expected error text)."""
    truncated = shutil.copytree(bundles["1"], tmp_path / "truncated")
    model = truncated / MODEL_FILE
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])

    incompatible = shutil.copytree(bundles["1"], tmp_path / "incompatible")
    metadata = json.loads((incompatible / "bundle.json").read_text())
    metadata.pop("files")
    metadata.pop("format_version")
    metadata["libraries"]["lightgbm"] = "3.3.5"
    write_metadata(incompatible, metadata)

    upload_bundle(bundles["1"], store_uri(infra, "1"), client=infra.s3)
    upload_bundle(bundles["1"], store_uri(infra, "7"), client=infra.s3)
    bucket = infra.resources.models_bucket
    infra.s3.put_object(Bucket=bucket, Key="models/tiny/7/model.lgb", Body=b"tree\nversion=v4\n")
    upload_bundle(bundles["1"], store_uri(infra, "8"), client=infra.s3)
    infra.s3.put_object(Bucket=bucket, Key="models/tiny/8/bundle.json", Body=b'{"model": {"name"')
    return {
        "baked-missing": ("baked", str(tmp_path / "no-such-bundle"), "no model bundle at"),
        "baked-truncated": ("baked", str(truncated), "has SHA-256"),
        "baked-incompatible": ("baked", str(incompatible), "made with LightGBM 3.3.5"),
        "s3-missing": ("s3", store_uri(infra, "9"), "no model bundle at"),
        "s3-checksum": ("s3", store_uri(infra, "7"), "has SHA-256"),
        "s3-truncated-metadata": ("s3", store_uri(infra, "8"), "is not valid JSON"),
    }


BROKEN = ("baked-missing", "baked-truncated", "baked-incompatible", "s3-missing", "s3-checksum",
          "s3-truncated-metadata")


@pytest.mark.parametrize("case", BROKEN)
def test_bad_bundle_rejected(infra, bundles, tmp_path, case):
    source, location, text = broken_bundles(infra, bundles, tmp_path)[case]
    with pytest.raises(BundleError, match=text):
        open_bundle(source, location, tmp_path / "cache")


def test_bad_bundle_stops_worker_at_start(infra, pool, bundles, tmp_path):
    """One case per source as a real process: exit code 2, one error line, nothing received."""
    infra.sqs.send_message(QueueUrl=infra.queue_url, MessageBody="a message no worker may receive")
    cases = broken_bundles(infra, bundles, tmp_path)
    workers = {}
    for name in ("baked-incompatible", "s3-checksum"):
        source, location, _ = cases[name]
        variable = "BUNDLE_PATH" if source == "baked" else "BUNDLE_URI"
        workers[name] = pool.start(worker_env(infra, bundles["1"], tmp_path, MODEL_SOURCE=source,
                                              **{variable: location}), name)
    for name, worker in workers.items():
        assert worker.wait(120) == 2, worker.tail()
        errors = [r for r in worker.records() if r["level"] == "error"]
        assert len(errors) == 1, worker.tail()
        assert errors[0]["message"].startswith("worker cannot start: ")
        assert cases[name][2] in errors[0]["message"]
        assert not any("receiving from" in r["message"] for r in worker.records())
    assert infra.queue_counts() == (1, 0)


def test_s3_source_verifies_and_caches(infra, pool, bundles, tmp_path):
    upload_bundle(bundles["1"], store_uri(infra, "1"), client=infra.s3)
    run_id, input_ids = dispatch_partitions(infra, "2026-06-01", partitions=2, rows=50)
    cache = tmp_path / "shared-cache"
    env = worker_env(infra, bundles["1"], tmp_path, MODEL_SOURCE="s3", BUNDLE_URI=store_uri(infra, "1"),
                     BUNDLE_PATH="/nonexistent", CACHE_DIR=cache, EXIT_WHEN_IDLE_SECONDS=3)
    first = pool.start(env, "s3-first")
    assert first.wait(90) == 0
    location = infra.run(run_id)
    assert infra.exists(location.bucket, location.key(SUCCESS))
    assert_exactly_once(read_run_outputs(infra, run_id), input_ids)
    assert any("downloaded bundle" in r["message"] for r in first.records())
    cached = list(cache.rglob("bundle.json"))
    assert len(cached) == 1
    assert load_bundle(cached[0].parent).digest == load_bundle(bundles["1"]).digest

    # The cache alone serves the next start: the bundle is gone from S3, and it still loads and verifies.
    for item in infra.s3.list_objects_v2(Bucket=infra.resources.models_bucket, Prefix="models/tiny/1/")["Contents"]:
        infra.s3.delete_object(Bucket=infra.resources.models_bucket, Key=item["Key"])
    assert open_bundle("s3", store_uri(infra, "1"), cache).digest == load_bundle(bundles["1"]).digest


def test_mixed_versions_score_with_run_version(infra, pool, bundles, tmp_path):
    upload_bundle(bundles["1"], store_uri(infra, "1"), client=infra.s3)
    run_id, input_ids = dispatch_partitions(infra, "2026-06-02", partitions=2, rows=50, model_version="1")
    worker = pool.start(worker_env(infra, bundles["2"], tmp_path, EXIT_WHEN_IDLE_SECONDS=3), "baked-v2")
    assert worker.wait(90) == 0
    location = infra.run(run_id)
    assert infra.exists(location.bucket, location.key(SUCCESS))

    outputs = read_run_outputs(infra, run_id).sort_by("row_id")
    assert_exactly_once(outputs, input_ids)
    assert set(outputs.column("model_version").to_pylist()) == {"1"}
    inputs = [feature_table(50, seed=i, start_row_id=1 + 50 * i) for i in range(2)]
    expected = np.concatenate([Scorer(load_bundle(bundles["1"]), threads=1).predict(t) for t in inputs])
    np.testing.assert_array_equal(outputs.column("ctr").to_numpy(), expected)
    other = np.concatenate([Scorer(load_bundle(bundles["2"]), threads=1).predict(t) for t in inputs])
    assert not np.array_equal(other, expected)

    body = infra.s3.get_object(Bucket=location.bucket, Key=location.output_key("part-00000"))["Body"].read()
    provenance = {k.decode(): v.decode() for k, v in pq.read_schema(io.BytesIO(body)).metadata.items()}
    assert provenance["ctr.model_version"] == "1"
    assert provenance["ctr.image_ref"] == IMAGE_REF.format(version="2")
    manifest = infra.get_json(location.bucket, location.key(MANIFEST))
    assert manifest["model_versions"] == ["1"]
    assert [i["image_ref"] for i in manifest["image_references"]] == [IMAGE_REF.format(version="2")]


def test_missing_run_version_fails_with_reason(infra, pool, bundles, tmp_path):
    upload_bundle(bundles["1"], store_uri(infra, "1"), client=infra.s3)
    for item in infra.s3.list_objects_v2(Bucket=infra.resources.models_bucket, Prefix="models/tiny/1/")["Contents"]:
        infra.s3.delete_object(Bucket=infra.resources.models_bucket, Key=item["Key"])
    run_id, _ = dispatch_partitions(infra, "2026-06-03", partitions=1, rows=20, model_version="1")
    pool.start(worker_env(infra, bundles["2"], tmp_path), "baked-v2")
    wait_until(lambda: infra.queue_counts(infra.dlq_url)[0] == 1, 90, "message dead-lettered",
               diagnostics=pool.tails)

    status = json.loads(run_cli("status", run_id, "--predictions-bucket", infra.predictions,
                                "--queue-url", infra.queue_url).stdout)
    assert status["state"] == "blocked"
    [failure] = status["failures"]
    assert failure["reason"] == "model_unavailable"
    assert f"cannot be loaded from {store_uri(infra, '1')}" in failure["error"]
    assert "no model bundle at" in failure["error"]
    assert not infra.exists(infra.predictions, infra.run(run_id).key(SUCCESS))


def test_compare_sources_agree(infra, bundles, tmp_path):
    upload_bundle(bundles["1"], store_uri(infra, "1"), client=infra.s3)
    partitions = [put_partition(infra, f"features/dt=2026-06-04/part-{i:05d}.parquet",
                                feature_table(200, seed=i, start_row_id=1 + 200 * i)) for i in range(2)]
    completed = run_cli("compare", "--bundle-path", str(bundles["1"]), "--bundle-uri", store_uri(infra, "1"),
                        "--partition", partitions[0], "--partition", partitions[1],
                        "--workdir", str(tmp_path / "compare"), timeout=300)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["max_abs_difference"] == 0.0
    assert report["same_bundle"] is True
    assert (report["partitions"], report["rows"]) == (2, 400)
    for source in ("baked", "s3"):
        assert 0 < report["sources"][source]["startup_seconds"] < 300
        assert report["sources"][source]["load_seconds"] >= 0
