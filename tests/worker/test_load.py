"""Load: 500 partitions through 4 worker processes, one of them killed with SIGKILL and replaced mid-run."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ctr_inference.dispatch import dispatch
from ctr_inference.runs import MANIFEST, SUCCESS, list_run

from tests.helpers import feature_table
from tests.worker.harness import assert_exactly_once, parquet_bytes, run_cli, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 500
ROWS = 20
WORKERS = 4
KILL_AFTER_OUTPUTS = 150
DEADLINE_SECONDS = 400


def test_load_with_worker_killed(infra, pool, bundles, tmp_path):
    dt = "2026-07-01"
    tables = [feature_table(ROWS, seed=i, start_row_id=1 + ROWS * i, label=False) for i in range(PARTITIONS)]
    with ThreadPoolExecutor(8) as uploads:
        list(uploads.map(lambda item: infra.s3.put_object(
            Bucket=infra.features, Key=f"features/dt={dt}/part-{item[0]:05d}.parquet", Body=parquet_bytes(item[1])),
            enumerate(tables)))
    result = dispatch(infra.s3, infra.sqs, infra.queue_url, infra.features, infra.predictions, dt, "tiny", "1")
    assert len(result.sent) == PARTITIONS
    location = infra.run(result.run_id)

    env = worker_env(infra, bundles["1"], tmp_path, VISIBILITY_TIMEOUT_SECONDS=8, HEARTBEAT_SECONDS=2)
    workers = [pool.start(env, f"load-{i}") for i in range(WORKERS)]
    started = time.monotonic()
    wait_until(lambda: len(list_run(infra.s3, location).outputs) >= KILL_AFTER_OUTPUTS, DEADLINE_SECONDS,
               f"{KILL_AFTER_OUTPUTS} outputs", interval=1, diagnostics=pool.tails)

    # Prefer killing the victim in the middle of a partition, when its last record starts one.
    victim = workers[0]
    wait_until(lambda: "scoring partition" in (victim.records() or [{}])[-1].get("message", ""), 10,
               "victim in the middle of a partition", interval=0.05)
    victim.kill()
    pool.start(env, "replacement")

    remaining = DEADLINE_SECONDS - (time.monotonic() - started)
    wait_until(lambda: infra.exists(location.bucket, location.key(SUCCESS)), remaining, f"{SUCCESS} of the run",
               interval=1, diagnostics=pool.tails)

    def read_output(partition: str) -> pa.Table:
        body = infra.s3.get_object(Bucket=location.bucket, Key=location.output_key(partition))["Body"].read()
        return pq.read_table(io.BytesIO(body))

    outputs = list_run(infra.s3, location).outputs
    assert len(outputs) == PARTITIONS
    with ThreadPoolExecutor(8) as downloads:
        table = pa.concat_tables(downloads.map(read_output, sorted(outputs)))
    assert_exactly_once(table, np.concatenate([t.column("row_id").to_numpy() for t in tables]))

    manifest = infra.get_json(location.bucket, location.key(MANIFEST))
    assert (manifest["partition_count"], manifest["rows"]) == (PARTITIONS, PARTITIONS * ROWS)
    assert wait_until(lambda: infra.queue_counts() == (0, 0), 30, "queue empty") is True
    assert infra.queue_counts(infra.dlq_url) == (0, 0)
    status = json.loads(run_cli("status", result.run_id, "--predictions-bucket", infra.predictions).stdout)
    assert (status["state"], status["done"], status["rows"]) == ("succeeded", PARTITIONS, PARTITIONS * ROWS)
    scored_by = {r["worker"] for r in pool.records() if "rows in" in r.get("message", "")}
    assert {"load-0", "replacement"} <= scored_by
