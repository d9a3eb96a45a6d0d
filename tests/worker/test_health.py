"""Liveness, readiness and Prometheus metrics: the HTTP server alone, then a real worker process."""

from __future__ import annotations

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


def test_readiness_follows_bundle_and_drain(server):
    state, _, url = server
    assert get(url + "/readyz")[0] == 503
    state.set_ready(True)
    assert get(url + "/readyz") == (200, "ok: model bundle loaded and verified\n")
    state.set_draining()
    assert get(url + "/readyz") == (503, "not ok: draining after SIGTERM\n")


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
    [info] = [dict(labels) for (name, labels) in values if name == "ctr_worker_model_info"]
    assert info["model_version"] == "1"
    assert info["model_source"] == "baked"
    assert info["image_ref"] == "tiny-v1-0123abc"
    assert len(info["bundle_digest"]) == 64

    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
