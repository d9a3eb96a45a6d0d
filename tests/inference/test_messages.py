"""Score requests and S3 event notifications."""

from __future__ import annotations

import json

import pytest
from ctr_inference.errors import MessageError
from ctr_inference.messages import make_request, parse_request, requests_from_s3_event


def s3_event(key: str, bucket: str = "features") -> dict:
    return {"Records": [{"eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]}


def test_request_round_trip_and_deterministic_output():
    request = make_request("s3://features/features/dt=2026-12-03/part-00007.parquet", "2026-12-03",
                           "ctr-criteo", "4", "predictions")
    assert parse_request(request.to_json()) == request
    assert request.output_uri == "s3://predictions/predictions/dt=2026-12-03/run=2026-12-03.v4/part-00007.parquet"


def test_request_output_under_predictions_prefix():
    request = make_request("s3://features/features/dt=2026-12-03/part-00007.parquet", "2026-12-03",
                           "ctr-criteo", "4", "predictions",
                           predictions_prefix="comparisons/s3-source/predictions/")

    assert request.output_uri == ("s3://predictions/comparisons/s3-source/predictions/"
                                  "dt=2026-12-03/run=2026-12-03.v4/part-00007.parquet")


@pytest.mark.parametrize("prefix", ["predictions", "/predictions/", ""])
def test_request_rejects_invalid_predictions_prefix(prefix):
    with pytest.raises(MessageError, match="invalid predictions prefix"):
        make_request("s3://features/features/dt=2026-12-03/part-00007.parquet", "2026-12-03",
                     "ctr-criteo", "4", "predictions", predictions_prefix=prefix)


@pytest.mark.parametrize("body, message", [
    ("not json", "not JSON"),
    (json.dumps({"type": "other"}), "not a ctr.score-request"),
    (json.dumps({"type": "ctr.score-request", "version": 9}), "unsupported"),
    (json.dumps({"type": "ctr.score-request", "version": 1, "run_id": "r"}), "missing field"),
])
def test_invalid_requests_are_rejected(body, message):
    with pytest.raises(MessageError, match=message):
        parse_request(body)


def test_s3_test_event_yields_nothing():
    assert requests_from_s3_event({"Service": "Amazon S3", "Event": "s3:TestEvent"}, "m", "1", "p") == []


def test_s3_event_keys_are_url_decoded():
    event = s3_event("incoming/dt=2026-12-03/batch+one%3D1.parquet")
    [request] = requests_from_s3_event(event, "ctr-criteo", "4", "predictions")
    assert request.input_uri == "s3://features/incoming/dt=2026-12-03/batch one=1.parquet"
    assert request.dt == "2026-12-03"
    assert request.model_version == "4"


def test_s3_event_outside_incoming_is_rejected():
    with pytest.raises(MessageError, match="outside incoming/"):
        requests_from_s3_event(s3_event("features/dt=2026-12-03/part-00000.parquet"), "m", "1", "p")
