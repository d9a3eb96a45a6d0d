"""Commands that read MLflow fall back to the demo's store under .ctr/mlflow when MLFLOW_TRACKING_URI is unset.

The store is written the way ``ctr demo`` writes it: an MLflow server on
loopback with a SQLite file, the experiment created with a ``file://``
artifact location. The server is stopped before the commands run, so they
must read the SQLite file and the artifacts folder directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctr import tracking
from ctr.services import MlflowServer
from tests.conftest import REPO_ROOT
from tests.helpers import feature_table

MODEL = "ctr-local-store"
PROXIED_MODEL = "ctr-proxied-store"
REGISTER_SCRIPT = ("import sys; from tests.images.test_local_store import register_tiny_model; "
                   "register_tiny_model(*sys.argv[1:])")


def register_tiny_model(folder: str, model_name: str, experiment: str, file_artifacts: str) -> None:
    """Train and register a tiny model on the server at MLFLOW_TRACKING_URI (run in a subprocess)."""
    from ctr_training.train import train_and_register

    folder = Path(folder)
    features = folder / "features"
    features.mkdir(parents=True)
    pq.write_table(feature_table(2000, seed=5), features / "part-00000.parquet")
    encoding = folder / "encoding.parquet"
    pq.write_table(pa.table({"feature": ["f_cat"] * 2, "value": ["5", "50"],
                             "count": pa.array([10, 20], pa.int64())}), encoding)
    if file_artifacts == "yes":
        tracking.ensure_local_experiment(experiment, os.environ["MLFLOW_TRACKING_URI"], folder.parent / ".ctr")
    train_and_register(features, encoding, model_name=model_name, experiment=experiment,
                       categorical=["f_cat"], num_boost_round=4,
                       lgb_params={"num_leaves": 4, "min_data_in_leaf": 20, "num_threads": 1})


def without_tracking_uri() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def run_ctr(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctr.cli", *args], cwd=cwd, env=without_tracking_uri(),
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def demo_checkout(tmp_path_factory) -> Path:
    """A folder whose .ctr/mlflow contains two registered models; no MLflow server runs afterwards."""
    checkout = tmp_path_factory.mktemp("checkout")
    with MlflowServer(None, checkout / ".ctr" / "logs", checkout / ".ctr" / "mlflow") as server:
        env = dict(without_tracking_uri(), MLFLOW_TRACKING_URI=server.url)
        for model, experiment, file_artifacts in ((MODEL, "local-store", "yes"),
                                                  (PROXIED_MODEL, "proxied-store", "no")):
            subprocess.run([sys.executable, "-c", REGISTER_SCRIPT, str(checkout / "work" / model), model,
                            experiment, file_artifacts], cwd=REPO_ROOT, env=env, check=True, timeout=300)
    return checkout


def test_unset_uri_without_store_fails(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)

    with pytest.raises(tracking.TrackingStoreError, match="no local MLflow store at .*make demo"):
        tracking.use_tracking_store()
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_unset_uri_defaults_to_local_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    store = tmp_path / ".ctr" / "mlflow"
    store.mkdir(parents=True)
    (store / "mlflow.db").touch()

    uri = tracking.use_tracking_store()

    assert uri == f"sqlite:///{store.resolve() / 'mlflow.db'}"
    assert os.environ["MLFLOW_TRACKING_URI"] == uri


def test_set_uri_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)

    assert tracking.use_tracking_store() == "http://127.0.0.1:9"


@pytest.mark.integration
def test_bake_reads_local_store_without_server(demo_checkout):
    result = run_ctr(demo_checkout, "image", "bake", MODEL, "1")

    assert result.returncode == 0, result.stderr
    assert "the demo's local store" in result.stderr
    assert (demo_checkout / ".ctr" / "images" / MODEL / "index.json").is_file()
    assert not (demo_checkout / "mlflow.db").exists()


@pytest.mark.integration
def test_bake_proxied_artifacts_need_server(demo_checkout):
    result = run_ctr(demo_checkout, "image", "bake", PROXIED_MODEL, "1")

    assert result.returncode == 1
    assert "mlflow-artifacts:" in result.stderr
    assert "make mlflow-ui" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_models_list_reads_local_store(demo_checkout):
    result = run_ctr(demo_checkout, "models", "list", "--model-name", MODEL)

    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split()[:2] == ["version", "aliases"]
    assert row.split()[:2] == ["1", "champion"]
    assert not (demo_checkout / "mlflow.db").exists()


@pytest.mark.integration
def test_models_list_unknown_model_names_known(demo_checkout):
    result = run_ctr(demo_checkout, "models", "list", "--model-name", "absent")

    assert result.returncode == 1
    assert "model 'absent' is not registered" in result.stderr
    assert MODEL in result.stderr


@pytest.mark.integration
def test_bake_unknown_version_points_to_list(demo_checkout):
    result = run_ctr(demo_checkout, "image", "bake", MODEL, "7")

    assert result.returncode == 1
    assert f"ctr models list --model-name {MODEL}" in result.stderr


def test_commands_without_store_leave_no_database(tmp_path):
    result = run_ctr(tmp_path, "models", "compare", "1", "2")

    assert result.returncode == 1
    assert "no local MLflow store" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / ".ctr").exists()
