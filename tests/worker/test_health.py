"""Liveness, readiness and Prometheus metrics: the HTTP server alone, then a real worker process."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

import pytest
from ctr_inference.health import HealthServer, HealthState, WorkerMetrics
from ctr_inference.runs import SUCCESS
from prometheus_client.parser import text_string_to_metric_families

from ctr.services import free_port
from tests.worker.harness import dispatch_partitions, wait_until, worker_env


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def samples(text: str) -> dict:
    """Map ``(name, sorted labels)`` to the value of every sample in a Prometheus exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def server():
    state = HealthState(stall_seconds=0.5, max_partition_seconds=0.5)
    metrics = WorkerMetrics()
    http = HealthServer("127.0.0.1", 0, state, metrics).start()
    yield state, metrics, f"http://127.0.0.1:{http.port}"
    http.stop()


def get_json(url: str) -> tuple[int, dict]:
    status, body = get(url)
    return status, json.loads(body)


def test_readiness_follows_bundle_and_drain(server):
    state, _, url = server
    status, document = get_json(url + "/readyz")
    assert status == 503
    assert document == {"ready": False, "reason": "model bundle not loaded yet"}

    state.set_ready(True, serving={"engine": "lightgbm", "fallback_reason": "the bundle has no compiled form"})
    status, document = get_json(url + "/readyz")
    assert status == 200
    assert document["ready"] is True
    assert document["reason"] == "model bundle loaded and verified"
    assert document["engine"] == "lightgbm"
    assert document["fallback_reason"] == "the bundle has no compiled form"

    state.set_draining()
    status, document = get_json(url + "/readyz")
    assert status == 503
    assert document["reason"] == "draining after SIGTERM"
    assert document["engine"] == "lightgbm"


def test_liveness_fails_on_stall_or_overlong_partition(server):
    state, _, url = server
    assert get(url + "/healthz")[0] == 200
    time.sleep(0.6)
    status, body = get(url + "/healthz")
    assert status == 503
    assert "stalled" in body
    state.tick()
    assert get(url + "/healthz")[0] == 200
    state.hold(True)
    time.sleep(0.6)
    status, body = get(url + "/healthz")
    assert status == 503
    assert "MAX_PARTITION_SECONDS" in body
    state.hold(False)
    assert get(url + "/healthz")[0] == 200


def test_unknown_path_is_404(server):
    _, _, url = server
    assert get(url + "/")[0] == 404


@pytest.mark.integration
def test_worker_serves_probes_and_metrics(infra, pool, bundles, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    worker = pool.start(worker_env(infra, bundles["1"], tmp_path, METRICS_PORT=port, METRICS_HOST="127.0.0.1"))
    wait_until(lambda: get(url + "/readyz")[0] == 200, 60, "worker ready", diagnostics=pool.tails)
    assert get(url + "/healthz")[0] == 200
    _, ready = get_json(url + "/readyz")
    # The tiny bundle has no compiled form, so the worker scores with LightGBM and reports why.
    assert ready["engine"] == "lightgbm"
    assert ready["fallback_reason"] == "the bundle has no compiled form"
    assert ready["model_version"] == "1"
    assert ready["prefetch"] is True

    run_id, _ = dispatch_partitions(infra, "2026-08-01", partitions=2, rows=40)
    infra.sqs.send_message(QueueUrl=infra.queue_url, MessageBody="not a score request")
    location = infra.run(run_id)
    wait_until(lambda: infra.exists(location.bucket, location.key(SUCCESS)), 60, f"{SUCCESS}",
               diagnostics=pool.tails)

    def failures_counted() -> bool:
        values = samples(get(url + "/metrics")[1])
        return values.get(("ctr_worker_partition_failures_total", (("reason", "invalid_message"),)), 0) >= 1

    wait_until(failures_counted, 30, "invalid message counted")
    values = samples(get(url + "/metrics")[1])
    assert values[("ctr_worker_partitions_scored_total", ())] == 2
    assert values[("ctr_worker_rows_scored_total", ())] == 80
    assert values[("ctr_worker_scoring_seconds_count", ())] == 2
    assert values[("ctr_worker_runs_completed_total", (("outcome", "succeeded"),))] == 1
    assert values[("ctr_worker_messages_in_flight", ())] in (0, 1)
    assert values[("ctr_worker_input_wait_seconds_total", ())] >= 0
    assert values[("ctr_worker_upload_wait_seconds_total", ())] >= 0
    [info] = [dict(labels) for (name, labels) in values if name == "ctr_worker_model_info"]
    assert info["model_version"] == "1"
    assert info["model_source"] == "baked"
    assert info["engine"] == "lightgbm"
    assert info["fallback_reason"] == "the bundle has no compiled form"
    assert info["image_ref"] == "tiny-v1-0123abc"
    assert len(info["bundle_digest"]) == 64

    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
