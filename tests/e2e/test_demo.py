"""The main job end to end on the real Criteo sample, against real local services.

The demo trains on the earlier 80% of the sample's lines and scores the later
20% through the queue with two worker processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctr.commands.demo import summarize
from ctr.demo import MODEL_NAME, DemoConfig, StepClock, run_demo
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tmp_path_factory, criteo_sample, spark, aws_endpoint, mlflow_uri):
    workdir = tmp_path_factory.mktemp("demo")
    config = DemoConfig(workdir=workdir, train_logs=[str(criteo_sample)], train_fraction=0.8,
                        num_boost_round=20, num_leaves=31, partitions=8, workers=2, dt="2026-12-03",
                        s3_endpoint=aws_endpoint, mlflow_tracking_uri=mlflow_uri, timeout=300)
    report = run_demo(config)
    return workdir, report


def read_dir(path: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(path.glob("*.parquet")))


def test_every_row_scored_once(demo):
    workdir, report = demo
    inputs = read_dir(workdir / "features" / "dt=2026-12-03")
    outputs = read_dir(Path(report["local_copy"]))
    output_ids = outputs.column("row_id").to_numpy()
    assert len(output_ids) == len(np.unique(output_ids))
    assert set(output_ids.tolist()) == set(inputs.column("row_id").to_pylist())
    assert report["rows_in"] == report["rows_scored"] == inputs.num_rows
    assert report["partitions"] >= 8


def test_scored_split_is_later_fifth(demo):
    _, report = demo
    assert report["rows_in"] == 15306 - int(15306 * 0.8)


def test_auc_on_later_rows(demo):
    _, report = demo
    assert report["auc"] >= 0.70


def test_categorical_features_carry_gain(demo):
    workdir, report = demo
    import lightgbm

    bundle = workdir / "bundles" / f"{MODEL_NAME}-v{report['model_version']}" / "bundle"
    booster = lightgbm.Booster(model_file=str(bundle / "model.lgb"))
    gains = dict(zip(booster.feature_name(), booster.feature_importance("gain")))
    categorical = sum(v for k, v in gains.items() if k.startswith("C"))
    assert categorical / sum(gains.values()) > 0


def test_worker_matches_registered_model(demo, mlflow_uri):
    workdir, report = demo
    import mlflow
    from ctr_inference.bundle import load_bundle
    from ctr_inference.contract import feature_matrix

    bundle = load_bundle(workdir / "bundles" / f"{MODEL_NAME}-v{report['model_version']}" / "bundle")
    inputs = read_dir(workdir / "features" / "dt=2026-12-03").sort_by("row_id")
    outputs = read_dir(Path(report["local_copy"])).sort_by("row_id")
    matrix = feature_matrix(inputs, bundle.features)
    frame = __import__("pandas").DataFrame(matrix, columns=[f.name for f in bundle.features])
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{report['model_version']}")
    expected = np.asarray(model.predict(frame), dtype=np.float64)
    assert np.max(np.abs(outputs.column("ctr").to_numpy() - expected)) < 1e-9


def test_outputs_record_model_and_image(demo):
    _, report = demo
    path = min(Path(report["local_copy"]).glob("*.parquet"))
    metadata = {k.decode(): v.decode() for k, v in pq.read_schema(path).metadata.items()}
    assert metadata["ctr.model_version"] == report["model_version"]
    assert metadata["ctr.image_digest"] == report["image_digest"]
    assert metadata["ctr.image_ref"] in report["image_reference"]


def test_report_file_written(demo):
    _, report = demo
    assert Path(report["report_path"]).is_file()
    for key in ("rows_in", "rows_scored", "partitions", "auc", "logloss", "rows_per_second", "model_name",
                "model_version", "image_reference", "mlflow_run_id", "output_location"):
        assert report[key] is not None, key


def test_summary_shows_run_and_output(demo):
    _, report = demo
    summary = summarize(report)
    assert summary["mlflow_run_id"] == report["mlflow_run_id"]
    assert summary["output_location"].startswith("s3://")
    assert summary["image_reference"] == report["image_reference"]


def test_report_times_each_step(demo):
    _, report = demo
    steps = report["step_seconds"]
    assert list(steps) == ["features", "training", "bake", "scoring features", "scoring", "report"]
    assert all(seconds >= 0 for seconds in steps.values())


def test_step_clock_prints_durations(capsys, monkeypatch):
    times = iter([100.0, 334.4, 334.4, 340.0])
    monkeypatch.setattr("ctr.demo.time.monotonic", lambda: next(times))
    clock = StepClock(2)

    clock.start("features", "feature job on the training logs")
    clock.start("training", "LightGBM training")
    clock.finish()

    assert capsys.readouterr().err.splitlines() == [
        "[1/2] feature job on the training logs",
        "[1/2] features: 234 s",
        "[2/2] LightGBM training",
        "[2/2] training: 6 s",
    ]
    assert clock.seconds == {"features": 234.4, "training": 5.6}


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctr.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env=env or dict(os.environ), check=False)


def test_port_in_use_fails_clearly(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("demo", "--workdir", str(tmp_path), "--moto-port", str(port), "--rows", "100")
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_java_fails_clearly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(Path(sys.executable).parent)
    result = run_cli("demo", "--workdir", str(tmp_path), "--rows", "100", env=env)
    assert result.returncode == 1
    assert "Java was not found" in result.stderr


def test_empty_and_missing_logs_fail_clearly(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    result = run_cli("demo", "--workdir", str(tmp_path), "--train-logs", str(empty))
    assert result.returncode == 1
    assert f"log file {empty} is empty" in result.stderr
    result = run_cli("demo", "--workdir", str(tmp_path), "--train-logs", str(tmp_path / "absent.tsv"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr
