"""The promotion gate against a real MLflow server, and ``ctr models compare``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from ctr_training.datasets import CRITEO
from ctr_training.gate import decide, run_gate
from ctr_training.train import CHALLENGER, RunContext, train_on_splits

from tests.conftest import REPO_ROOT
from tests.training.conftest import DOWNSAMPLED_RATE

pytestmark = pytest.mark.integration

EXPERIMENT = f"gate-test-{uuid.uuid4().hex[:8]}"
TOLERANCE = 0.001


def test_decide_without_champion():
    assert decide(0.5, None, 0.001) == (True, "no champion yet")


@pytest.mark.parametrize(("challenger", "champion", "promoted"), [
    (0.4000, 0.4000, True),
    (0.4009, 0.4000, True),
    (0.4011, 0.4000, False),
    (0.3500, 0.4000, True),
])
def test_decide_applies_tolerance(challenger, champion, promoted):
    decision, reason = decide(challenger, champion, 0.001)
    assert decision is promoted
    assert f"{challenger:.6f}" in reason
    assert f"{champion:.6f}" in reason


def test_negative_tolerance_is_rejected(mlflow_uri, criteo_features):
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        run_gate("any", "1", Path(criteo_features.out_dir) / "test_parsed", -0.1)


def train(features, model_name: str, trees: int, negative_rate: float = 1.0):
    out = Path(features.out_dir)
    params = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 50, "learning_rate": 0.1,
              "num_threads": 2, "seed": 3, "deterministic": True, "force_row_wise": True, "verbosity": -1}
    return train_on_splits(
        out / "train", out / "valid", out / "encoding.parquet", model_name=model_name,
        context=RunContext(experiment=EXPERIMENT, params={"trees": trees}), categorical=list(CRITEO.categorical),
        feature_names=CRITEO.feature_columns, lgb_params=params, num_boost_round=trees,
        negative_rate=negative_rate, alias=CHALLENGER,
    )


@pytest.fixture(scope="module")
def gated(mlflow_uri, criteo_features, criteo_features_downsampled):
    """Three challengers in turn: a first model, a one-tree model, and a stronger downsampled model."""
    name = f"ctr-gate-{uuid.uuid4().hex[:8]}"
    test_parsed = Path(criteo_features.out_dir) / "test_parsed"
    outcomes = []
    for features, trees, rate in ((criteo_features, 8, 1.0), (criteo_features, 1, 1.0),
                                  (criteo_features_downsampled, 60, DOWNSAMPLED_RATE)):
        trained = train(features, name, trees, rate)
        decision = run_gate(name, trained.model_version, test_parsed, TOLERANCE)
        outcomes.append((trained, decision))
    return name, outcomes


def champion(name: str) -> str:
    import mlflow

    return mlflow.MlflowClient().get_model_version_by_alias(name, "champion").version


def test_first_model_becomes_champion(gated):
    _, outcomes = gated
    _, decision = outcomes[0]
    assert decision.promoted
    assert decision.champion_version is None
    assert decision.reason == "no champion yet"


def test_one_tree_model_is_rejected(gated):
    _, outcomes = gated
    first, _ = outcomes[0]
    _, decision = outcomes[1]
    assert not decision.promoted
    assert decision.champion_version == first.model_version
    assert decision.challenger_logloss > decision.champion_logloss + TOLERANCE


def test_better_model_becomes_champion(gated):
    name, outcomes = gated
    trained, decision = outcomes[2]
    assert decision.promoted
    assert decision.champion_version == outcomes[0][0].model_version
    assert decision.challenger_logloss < decision.champion_logloss
    assert champion(name) == trained.model_version


def test_rejected_model_kept_champion_meanwhile(gated):
    """Between the rejection and the next promotion the champion stayed the first model."""
    _, outcomes = gated
    rejected = outcomes[1][1]
    promoted_later = outcomes[2][1]
    assert promoted_later.champion_version == rejected.champion_version == outcomes[0][0].model_version


def test_decision_and_both_numbers_are_logged(gated):
    import mlflow

    name, outcomes = gated
    trained, decision = outcomes[1]
    client = mlflow.MlflowClient()
    run = client.get_run(trained.run_id)
    assert run.data.metrics["gate_challenger_logloss"] == pytest.approx(decision.challenger_logloss)
    assert run.data.metrics["gate_champion_logloss"] == pytest.approx(decision.champion_logloss)
    assert run.data.metrics["gate_tolerance"] == TOLERANCE
    assert run.data.metrics["gate_promoted"] == 0.0
    assert run.data.tags["ctr.gate.decision"] == "rejected"
    assert run.data.tags["ctr.gate.champion_version"] == outcomes[0][0].model_version
    version = client.get_model_version(name, trained.model_version)
    assert version.tags["ctr.gate.decision"] == "rejected"
    logged = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=trained.run_id,
                                                                 artifact_path="gate/decision.json")).read_text())
    assert logged["decision"] == "rejected"
    assert logged["champion_logloss"] == pytest.approx(decision.champion_logloss)


def test_gate_corrects_each_models_sampling(gated, criteo_features):
    """The downsampled model is judged on corrected predictions; raw ones would lose to the champion."""
    from ctr_inference.contract import LABEL
    from ctr_training.evaluate import log_loss
    from ctr_training.gate import load_registered
    from ctr_training.train import read_features

    name, outcomes = gated
    trained, decision = outcomes[2]
    model = load_registered(name, trained.model_version)
    assert model.negative_rate == DOWNSAMPLED_RATE
    parsed = read_features(Path(criteo_features.out_dir) / "test_parsed")
    labels = parsed.column(LABEL).to_numpy()
    assert log_loss(labels, model.predict(parsed)) == pytest.approx(decision.challenger_logloss, rel=1e-12)
    model.negative_rate = 1.0
    uncorrected = log_loss(labels, model.predict(parsed))
    assert uncorrected > decision.champion_logloss + 0.05


def test_challenger_alias_points_at_latest(gated):
    import mlflow

    name, outcomes = gated
    alias = mlflow.MlflowClient().get_model_version_by_alias(name, CHALLENGER)
    assert alias.version == outcomes[2][0].model_version


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctr.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=180, env=dict(os.environ), check=False)


def test_models_compare_prints_side_by_side(gated):
    name, outcomes = gated
    first, rejected = outcomes[0][0], outcomes[1][0]
    result = run_cli("models", "compare", first.model_version, f"v{rejected.model_version}", "--model-name", name)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == [name, "version", first.model_version]
    row = next(line.split() for line in lines if line.startswith("valid_logloss"))
    assert float(row[1]) == pytest.approx(first.metrics["valid_logloss"], abs=1e-6)
    assert float(row[2]) == pytest.approx(rejected.metrics["valid_logloss"], abs=1e-6)
    assert float(row[3]) == pytest.approx(rejected.metrics["valid_logloss"] - first.metrics["valid_logloss"],
                                          abs=2e-6)
    gate_row = next(line.split() for line in lines if line.startswith("gate decision"))
    assert gate_row[2:] == ["promoted", "rejected"]
    assert re.search(r"^  num_boost_round\s+8  ->  1$", result.stdout, re.MULTILINE)


def test_models_compare_resolves_aliases(gated):
    name, outcomes = gated
    result = run_cli("models", "compare", "@champion", f"models:/{name}@challenger", "--model-name", name,
                     "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["a"]["version"] == outcomes[2][0].model_version
    assert "champion" in data["a"]["aliases"]
    assert data["b"]["version"] == outcomes[2][0].model_version


def test_models_compare_unknown_version_fails(gated):
    name, _ = gated
    result = run_cli("models", "compare", "1", "99", "--model-name", name)
    assert result.returncode == 1
    assert f"'99' is not a version of model '{name}'" in result.stderr
    assert "Traceback" not in result.stderr
