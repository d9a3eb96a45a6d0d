"""In-process pieces of the worker: configuration, sanity bounds, failure reasons, S3 events, leases, status text."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError
from ctr_inference.errors import (
    BundleNotFoundError,
    CorruptPartitionError,
    CtrError,
    FeatureDtypeError,
    InputNotFoundError,
    MessageError,
    MissingFeatureError,
    ModelUnavailableError,
    UnknownFormatError,
)
from ctr_inference.leases import LeaseKeeper
from ctr_inference.messages import (
    incoming_partition_name,
    make_request,
    parse_request,
    run_dt,
    s3_event_objects,
)
from ctr_inference.runs import OutputStats, SanityBounds, check_sanity
from ctr_inference.status import RunStatus, format_seconds, progress_bar, render_text
from ctr_inference.worker import DurationModel, WorkerConfig, failure_backoff, failure_reason


def test_config_defaults_and_numbers():
    config = WorkerConfig.from_env({"QUEUE_URL": "http://q", "HEARTBEAT_SECONDS": "2.5",
                                    "VISIBILITY_TIMEOUT_SECONDS": "60", "METRICS_PORT": "0",
                                    "SANITY_MAX_MEAN_CTR": "0.3"})
    assert config.heartbeat_seconds == 2.5
    assert config.visibility_timeout_seconds == 60
    assert config.metrics_port == 0
    assert config.wait_time_seconds == 20
    assert config.grace_seconds == 50.0
    assert config.sanity.max_mean_ctr == 0.3
    assert config.sanity.min_mean_ctr == SanityBounds().min_mean_ctr


@pytest.mark.parametrize("environ, message", [
    ({}, "QUEUE_URL is not set"),
    ({"WAIT_TIME_SECONDS": "soon"}, "WAIT_TIME_SECONDS='soon' is not a number"),
    ({"WAIT_TIME_SECONDS": "21"}, "outside 0-20"),
    ({"HEARTBEAT_SECONDS": "120"}, "below VISIBILITY_TIMEOUT_SECONDS=120"),
    ({"MODEL_SOURCE": "ftp"}, "MODEL_SOURCE='ftp' is unknown"),
    ({"MODEL_SOURCE": "s3"}, "needs BUNDLE_URI"),
    ({"MODEL_SOURCE": "oci"}, "needs MODEL_IMAGE"),
    ({"METRICS_PORT": "70000"}, "not a TCP port"),
    ({"SANITY_MIN_MEAN_CTR": "0.6"}, "above SANITY_MAX_MEAN_CTR"),
    ({"SANITY_MAX_NULL_FRACTION": "2"}, "within \\[0, 1\\]"),
])
def test_config_rejects_invalid_values(environ, message):
    base = {"QUEUE_URL": "http://q"} if environ else {}
    with pytest.raises(CtrError, match=message):
        WorkerConfig.from_env(dict(base, **environ))


BOUNDS = SanityBounds(min_mean_ctr=0.01, max_mean_ctr=0.4, max_null_fraction=0.001, min_rows=10)


@pytest.mark.parametrize("rows, mean, nulls, versions, failed", [
    (100, 0.2, 0.0, ["1"], []),
    (100, 0.5, 0.0, ["1"], ["SANITY_MAX_MEAN_CTR"]),
    (100, 0.001, 0.0, ["1"], ["SANITY_MIN_MEAN_CTR"]),
    (100, 0.2, 0.01, ["1"], ["SANITY_MAX_NULL_FRACTION"]),
    (5, 0.2, 0.0, ["1"], ["SANITY_MIN_ROWS"]),
    (0, None, 0.0, ["1"], ["SANITY_MIN_ROWS"]),
    (100, None, 1.0, ["1"], ["SANITY_MIN_MEAN_CTR", "SANITY_MAX_NULL_FRACTION"]),
    (100, 0.2, 0.0, ["1", "2"], ["model_version"]),
])
def test_sanity_bounds(rows, mean, nulls, versions, failed):
    failures = check_sanity(rows, mean, nulls, versions, "1", BOUNDS)
    assert [f["bound"] for f in failures] == failed
    assert all(f["message"] for f in failures)


def test_output_stats_round_trip_through_s3_metadata():
    stats = OutputStats("part-00001", 3, 0.1 + 0.2, 1, "tiny", "4", "d" * 64, "tiny-v4-abc", "sha256:x",
                        "lightgbm", "pod-1", 1.5e9, 1.5e9 + 2.25, 2.25)
    metadata = stats.to_s3_metadata()
    assert all(isinstance(v, str) and k == k.lower() for k, v in metadata.items())
    assert OutputStats.from_s3_metadata("part-00001", metadata) == stats
    assert stats.mean_ctr == pytest.approx(0.15)


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}}, "GetObject")


@pytest.mark.parametrize("error, reason", [
    (MessageError("x"), "invalid_message"),
    (InputNotFoundError("x"), "missing_input"),
    (UnknownFormatError("x"), "unknown_format"),
    (CorruptPartitionError("x"), "corrupt_parquet"),
    (MissingFeatureError("f"), "missing_column"),
    (FeatureDtypeError("f", "float64", "string"), "wrong_dtype"),
    (ModelUnavailableError("x"), "model_unavailable"),
    (BundleNotFoundError("x"), "model_unavailable"),
    (client_error("SlowDown"), "storage_error"),
    (ZeroDivisionError(), "internal_error"),
])
def test_failure_reasons(error, reason):
    assert failure_reason(error) == reason


def s3_event(*keys: str) -> dict:
    return {"Records": [{"eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": "landing"}, "object": {"key": key}}} for key in keys]}


def test_s3_event_objects_skip_markers_and_decode_keys():
    objects = s3_event_objects(s3_event("incoming/dt=2026-01-02/a+b%2Bc.parquet", "incoming/dt=2026-01-02/_SUCCESS",
                                        "incoming/dt=2026-01-02/.part.crc"))
    assert [o.key for o in objects] == ["incoming/dt=2026-01-02/a b+c.parquet"]
    assert objects[0].dt == "2026-01-02"
    assert objects[0].date_prefix == "s3://landing/incoming/dt=2026-01-02/"


@pytest.mark.parametrize("key, name", [
    ("incoming/dt=2026-01-02/part-00000.parquet", "incoming-part-00000"),
    ("incoming/dt=2026-01-02/batch one.parquet", "incoming-batch one"),
    ("incoming/dt=2026-01-02/hour=03/x.parquet", "incoming-hour=03__x"),
    ("incoming/dt=2026-01-02/data.csv", "incoming-data.csv"),
])
def test_incoming_partition_names(key, name):
    assert incoming_partition_name(key, "2026-01-02") == name


def test_run_dt_parses_and_rejects():
    assert run_dt("2026-01-02.v14") == "2026-01-02"
    with pytest.raises(MessageError, match="invalid run id"):
        run_dt("latest")


def test_duration_model_needs_history():
    model = DurationModel()
    assert model.expected_seconds(1000) is None
    model.record(1000, 2.0)
    model.record(0, 0.5)
    assert model.expected_seconds(2000) == pytest.approx(4.5)
    assert model.expected_seconds(None) is None


def test_status_text_shows_bar_counts_and_reasons():
    status = RunStatus("2026-01-02.v3", "2026-01-02", "ctr-criteo", "3", "running", "s3://p/predictions/",
                       expected=10, done=5, failed=1, dead_lettered=1, pending=4, rows=5000, elapsed_seconds=50.0,
                       rows_per_second=100.0, eta_seconds=40.0, dead_letter_queue_depth=1,
                       failures=[{"partition": "part-00007", "reason": "missing_column", "receive_count": 5,
                                  "dead_lettered": True, "error": "missing feature column 'f_cat'"}])
    text = render_text(status, width=10)
    assert "[#####x....]  50.0%  5/10 partitions" in text
    assert "done 5  failed 1 (dead-lettered 1)  pending 4" in text
    assert "rows 5,000  rows/s 100.0  elapsed 0m50s  ETA 0m40s" in text
    assert "dead-letter queue: 1 messages" in text
    assert "part-00007: missing_column (receive 5, dead-lettered): missing feature column 'f_cat'" in text
    assert progress_bar(0, 0, 0, 4) == "[    ]"
    assert format_seconds(3725) == "1h02m05s"


def test_lease_released_is_never_deleted(infra):
    infra.sqs.send_message(QueueUrl=infra.queue_url, MessageBody=json.dumps({"x": 1}))
    message = infra.sqs.receive_message(QueueUrl=infra.queue_url, VisibilityTimeout=60)["Messages"][0]
    keeper = LeaseKeeper(infra.sqs, infra.queue_url, 60, 30, 600)
    lease = keeper.add(message)
    assert keeper.release(lease, 0) is True
    assert keeper.delete(lease) is False
    assert infra.queue_counts() == (1, 0)

    again = infra.sqs.receive_message(QueueUrl=infra.queue_url, VisibilityTimeout=60)["Messages"][0]
    lease = keeper.add(again)
    assert keeper.delete(lease) is True
    assert keeper.release(lease, 0) is False
    assert infra.queue_counts() == (0, 0)


def test_request_output_key_is_deterministic():
    first = make_request("s3://f/features/dt=2026-01-02/part-00003.parquet", "2026-01-02", "m", "7", "p")
    second = make_request("s3://f/features/dt=2026-01-02/part-00003.parquet", "2026-01-02", "m", "7", "p")
    assert first.output_uri == second.output_uri
    assert first.output_uri == "s3://p/predictions/dt=2026-01-02/run=2026-01-02.v7/part-00003.parquet"


@pytest.mark.parametrize("reason, receive_count, seconds", [
    ("corrupt_parquet", 4, 5),
    ("model_unavailable", 4, 5),
    ("storage_error", 1, 5),
    ("storage_error", 4, 40),
    ("internal_error", 12, 900),
])
def test_failure_backoff_doubles_for_transient(reason, receive_count, seconds):
    assert failure_backoff(reason, receive_count, 5) == seconds


def test_request_generation_defaults_to_zero():
    request = make_request("s3://f/features/dt=2026-01-02/part-00003.parquet", "2026-01-02", "m", "7", "p")
    document = json.loads(request.to_json())
    assert document["generation"] == 0
    document.pop("generation")
    assert parse_request(json.dumps(document)) == request
    forced = make_request("s3://f/features/dt=2026-01-02/part-00003.parquet", "2026-01-02", "m", "7", "p", 2)
    assert parse_request(forced.to_json()).generation == 2
