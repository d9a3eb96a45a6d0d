"""LightGBM training on feature partitions, logged to MLflow and registered.

The model is a ``lightgbm.Booster`` saved in LightGBM's text format by the
MLflow LightGBM flavor. Training and validation rows are split by ``row_id``
(log order is time order), never shuffled. Alongside the model, the run stores
the files the model bundle needs under the ``bundle/`` artifact path: the
feature list and the categorical encoding table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctr_inference.bundle import sha256_file
from ctr_inference.contract import CATEGORICAL_FREQUENCY, LABEL, NUMERIC, ROW_ID, Feature, feature_matrix
from ctr_inference.errors import CtrError

logger = logging.getLogger(__name__)

BUNDLE_ARTIFACTS = "bundle"
FEATURES_FILE = "features.json"
ENCODING_FILE = "encoding.parquet"
CHAMPION = "champion"

DEFAULT_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_threads": 2,
    "seed": 42,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}


@dataclass
class TrainResult:
    """The registered outcome of one training run."""

    run_id: str
    model_name: str
    model_version: str
    metrics: dict


def dataset_digest(paths: list[Path]) -> str:
    """SHA-256 over the names and SHA-256s of a dataset's files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(f"{path.name} {sha256_file(path)}\n".encode())
    return digest.hexdigest()


def git_commit(directory: Path | None = None) -> str:
    """Return the checked-out git commit, or ``unknown`` outside a repository."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, check=True, capture_output=True, text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def features_of(schema: pa.Schema, categorical: list[str]) -> list[Feature]:
    """Derive the model's ordered feature list from a feature table's schema."""
    features = []
    for arrow_field in schema:
        if arrow_field.name in (ROW_ID, LABEL):
            continue
        kind = CATEGORICAL_FREQUENCY if arrow_field.name in categorical else NUMERIC
        features.append(Feature(arrow_field.name, str(arrow_field.type), kind))
    return features


def read_features(directory: Path) -> pa.Table:
    """Read every partition of a feature directory, ordered by ``row_id``.

    Raises:
        CtrError: the directory has no partitions or no ``label`` column.
    """
    paths = sorted(Path(directory).glob("*.parquet"))
    if not paths:
        raise CtrError(f"no feature partitions in {directory}")
    table = pa.concat_tables(pq.read_table(p) for p in paths)
    if LABEL not in table.column_names:
        raise CtrError(f"feature partitions in {directory} have no {LABEL!r} column to train on")
    return table.sort_by(ROW_ID)


def time_split(table: pa.Table, valid_fraction: float) -> tuple[pa.Table, pa.Table]:
    """Split rows ordered by ``row_id`` into earlier training and later validation rows."""
    if not 0 < valid_fraction < 1:
        raise CtrError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
    cut = int(round(table.num_rows * (1 - valid_fraction)))
    if cut == 0 or cut == table.num_rows:
        raise CtrError(f"{table.num_rows} rows are too few to split with valid_fraction {valid_fraction}")
    return table.slice(0, cut), table.slice(cut)


def evaluate(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """AUC, logloss, and the mean predicted and observed click rates."""
    from sklearn.metrics import log_loss, roc_auc_score

    metrics = {
        "logloss": float(log_loss(labels, np.clip(predictions, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "mean_ctr_predicted": float(predictions.mean()),
        "mean_ctr_observed": float(labels.mean()),
    }
    if len(np.unique(labels)) == 2:
        metrics["auc"] = float(roc_auc_score(labels, predictions))
    return metrics


def fit_booster(params: dict, num_boost_round: int, train: pa.Table, valid: pa.Table, features: list[Feature]):
    """Train a LightGBM booster on the contract's feature matrix (NaN for missing)."""
    import lightgbm

    train_set = lightgbm.Dataset(
        feature_matrix(train, features), label=train.column(LABEL).to_numpy(),
        feature_name=[f.name for f in features], free_raw_data=True,
    )
    valid_set = train_set.create_valid(
        feature_matrix(valid, features), label=valid.column(LABEL).to_numpy(),
    )
    return lightgbm.train(
        params, train_set, num_boost_round=num_boost_round, valid_sets=[valid_set], valid_names=["valid"],
        callbacks=[lightgbm.log_evaluation(period=max(1, num_boost_round // 5))],
    )


def train_and_register(
    features_dir: Path, encoding_path: Path, *, model_name: str, experiment: str,
    categorical: list[str], lgb_params: dict | None = None, num_boost_round: int = 100,
    valid_fraction: float = 0.1, extra_params: dict | None = None, alias: str = CHAMPION,
) -> TrainResult:
    """Train on a feature directory, log the run to MLflow, register a version and set ``alias``.

    MLflow's tracking URI comes from the environment (``MLFLOW_TRACKING_URI``).
    """
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    params = dict(DEFAULT_PARAMS, **(lgb_params or {}))
    table = read_features(features_dir)
    features = features_of(table.schema, categorical)
    train, valid = time_split(table, valid_fraction)
    partitions = sorted(Path(features_dir).glob("*.parquet"))
    digest = dataset_digest(partitions)
    commit = git_commit(Path(__file__).parent)

    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.set_tags({"mlflow.source.git.commit": commit, "ctr.git_commit": commit,
                         "ctr.training_data.sha256": digest})
        mlflow.log_params({**params, "num_boost_round": num_boost_round,
                           "valid_fraction": valid_fraction, **(extra_params or {})})
        with warnings.catch_warnings():
            # A local path matches two equivalent MLflow source types; either is right.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(Path(features_dir).resolve()))
        mlflow.log_input(MetaDataset(source, name="features", digest=digest[:20]), context="training")

        booster = fit_booster(params, num_boost_round, train, valid, features)
        valid_predictions = booster.predict(feature_matrix(valid, features))
        metrics = {f"valid_{k}": v for k, v in evaluate(valid.column(LABEL).to_numpy(), valid_predictions).items()}
        metrics.update(train_rows=train.num_rows, valid_rows=valid.num_rows)
        mlflow.log_metrics(metrics)

        with tempfile.TemporaryDirectory() as scratch:
            features_json = Path(scratch) / FEATURES_FILE
            features_json.write_text(json.dumps({
                "features": [f.to_dict() for f in features],
                "training_data": {"sha256": digest, "rows": table.num_rows},
                "metrics": metrics,
                "git_commit": commit,
            }, indent=2, sort_keys=True))
            mlflow.log_artifact(str(features_json), BUNDLE_ARTIFACTS)
            mlflow.log_artifact(str(encoding_path), BUNDLE_ARTIFACTS)

        sample = feature_matrix(valid.slice(0, 5), features)
        example = {f.name: sample[:, j] for j, f in enumerate(features)}
        import pandas as pd

        example_frame = pd.DataFrame(example)
        info = mlflow.lightgbm.log_model(
            booster, name="model", registered_model_name=model_name, input_example=example_frame,
            signature=infer_signature(example_frame, booster.predict(sample)),
        )
        version = str(info.registered_model_version)
        if alias:
            mlflow.MlflowClient().set_registered_model_alias(model_name, alias, version)
    logger.info("run %s registered %s version %s: valid AUC %.4f, logloss %.4f",
                run.info.run_id, model_name, version, metrics.get("valid_auc", float("nan")),
                metrics["valid_logloss"])
    return TrainResult(run.info.run_id, model_name, version, metrics)
