"""LightGBM training on feature partitions, logged to MLflow and registered.

The model is a ``lightgbm.Booster`` saved in LightGBM's text format by the
MLflow LightGBM flavor. Training and validation rows are ordered in time,
never shuffled. Alongside the model, the run stores the files the model
bundle needs under the ``bundle/`` artifact path: ``features.json`` (feature
list, training-data digest, metrics, git commit, negative sampling rate) and
the categorical encoding table.

Two entry points share one core: ``train_and_register`` splits one feature
folder by ``row_id`` (the demo's path), and ``train_on_splits`` takes the
pipeline's separate train and validation folders.

Training is deterministic: LightGBM runs with ``deterministic``,
``force_row_wise``, a fixed ``num_threads`` and seed, and rows are read in
``row_id`` order, so the same features and parameters give a byte-identical
model file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ctr_inference.bundle import sha256_file
from ctr_inference.calibration import correct_negative_sampling
from ctr_inference.contract import (
    CATEGORICAL_FREQUENCY,
    LABEL,
    NUMERIC,
    ROW_ID,
    Feature,
    feature_matrix,
)
from ctr_inference.errors import CtrError

logger = logging.getLogger(__name__)

BUNDLE_ARTIFACTS = "bundle"
FEATURES_FILE = "features.json"
ENCODING_FILE = "encoding.parquet"
CHAMPION = "champion"
CHALLENGER = "challenger"
# MLflow stores at most this many characters of a dataset digest.
MLFLOW_DIGEST_LENGTH = 20

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


@dataclass
class InputDataset:
    """A dataset a run reads, logged with ``mlflow.log_input``: a name, its files and the role it plays."""

    name: str
    paths: list[Path]
    context: str
    source: str = ""
    # DVC's md5 of the data when DVC tracks it: raw logs are not hashed a second time.
    dvc_md5: str = ""

    @property
    def digest_kind(self) -> str:
        return "dvc_md5" if self.dvc_md5 else "sha256"

    @property
    def digest(self) -> str:
        return self.dvc_md5 or dataset_digest(self.paths)


@dataclass
class RunContext:
    """The parameters, tags and input datasets a run records besides the model."""

    experiment: str
    params: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    inputs: list[InputDataset] = field(default_factory=list)


def dataset_digest(paths: list[Path]) -> str:
    """SHA-256 over the names and SHA-256s of a dataset's files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(f"{path.name} {sha256_file(path)}\n".encode())
    return digest.hexdigest()


def git_commit(directory: Path | None = None) -> str:
    """Return the checked-out git commit.

    Outside a repository (a training image built without ``.git``) it returns
    ``CTR_GIT_COMMIT`` from the environment, or ``unknown``.
    """
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, check=True, capture_output=True, text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("CTR_GIT_COMMIT", "unknown")


def features_of(schema: pa.Schema, categorical: list[str], names: list[str] | None = None) -> list[Feature]:
    """Derive the model's ordered feature list from a feature table's schema.

    Without ``names`` every column but ``row_id`` and ``label`` is a feature;
    with ``names`` only those columns are, in schema order.

    Raises:
        CtrError: a name in ``names`` is not a column.
    """
    if names is not None:
        absent = [n for n in names if schema.get_field_index(n) < 0]
        if absent:
            raise CtrError(f"feature columns {absent} are not in the feature partitions")
    features = []
    for arrow_field in schema:
        if arrow_field.name in (ROW_ID, LABEL) or (names is not None and arrow_field.name not in names):
            continue
        kind = CATEGORICAL_FREQUENCY if arrow_field.name in categorical else NUMERIC
        features.append(Feature(arrow_field.name, str(arrow_field.type), kind))
    return features


def partition_files(directory: Path) -> list[Path]:
    """Return the Parquet partitions of a feature folder in name order.

    Raises:
        CtrError: the folder has no partitions.
    """
    paths = sorted(Path(directory).glob("*.parquet"))
    if not paths:
        raise CtrError(f"no feature partitions in {directory}")
    return paths


def read_features(directory: Path, labelled: bool = True) -> pa.Table:
    """Read every partition of a feature directory, ordered by ``row_id``.

    Raises:
        CtrError: the directory has no partitions, or no ``label`` column when ``labelled``.
    """
    table = pa.concat_tables(pq.read_table(p) for p in partition_files(directory))
    if labelled and LABEL not in table.column_names:
        raise CtrError(f"feature partitions in {directory} have no {LABEL!r} column to train on")
    return table.sort_by(ROW_ID)


def time_split(table: pa.Table, valid_fraction: float) -> tuple[pa.Table, pa.Table]:
    """Split rows ordered by ``row_id`` into earlier training and later validation rows."""
    if not 0 < valid_fraction < 1:
        raise CtrError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
    cut = round(table.num_rows * (1 - valid_fraction))
    if cut == 0 or cut == table.num_rows:
        raise CtrError(f"{table.num_rows} rows are too few to split with valid_fraction {valid_fraction}")
    return table.slice(0, cut), table.slice(cut)


def evaluate(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """AUC, logloss, normalized entropy, calibration, and the mean predicted and observed click rates."""
    from ctr_training import evaluate as evaluation

    return evaluation.metrics(labels, predictions)


def fit_booster(params: dict, num_boost_round: int, train: pa.Table, valid: pa.Table, features: list[Feature],
                early_stopping_rounds: int = 0):
    """Train a LightGBM booster on the contract's feature matrix (NaN for missing)."""
    import lightgbm

    train_set = lightgbm.Dataset(
        feature_matrix(train, features), label=train.column(LABEL).to_numpy(),
        feature_name=[f.name for f in features], free_raw_data=True,
    )
    valid_set = train_set.create_valid(
        feature_matrix(valid, features), label=valid.column(LABEL).to_numpy(),
    )
    callbacks = [lightgbm.log_evaluation(period=max(1, num_boost_round // 5))]
    if early_stopping_rounds:
        callbacks.append(lightgbm.early_stopping(early_stopping_rounds, verbose=False))
    return lightgbm.train(
        params, train_set, num_boost_round=num_boost_round, valid_sets=[valid_set], valid_names=["valid"],
        callbacks=callbacks,
    )


def flatten_params(params: dict, prefix: str = "") -> dict[str, str]:
    """Flatten nested parameters to MLflow's ``a.b.c`` keys; lists become comma-joined strings."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat


def log_input(dataset: InputDataset) -> None:
    """Log one input dataset to the active run with its digest and source location."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    location = dataset.source or str(Path(dataset.paths[0]).parent.resolve())
    with warnings.catch_warnings():
        # A local path matches two equivalent MLflow source types; either is right.
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(location)
    digest = dataset.digest
    mlflow.log_input(MetaDataset(source, name=dataset.name, digest=digest[:MLFLOW_DIGEST_LENGTH]),
                     context=dataset.context)
    mlflow.set_tag(f"ctr.data.{dataset.name}.{dataset.digest_kind}", digest)


def _log_bundle_artifacts(features: list[Feature], encoding_path: Path, facts: dict) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as scratch:
        features_json = Path(scratch) / FEATURES_FILE
        features_json.write_text(json.dumps({"features": [f.to_dict() for f in features], **facts},
                                            indent=2, sort_keys=True))
        mlflow.log_artifact(str(features_json), BUNDLE_ARTIFACTS)
        mlflow.log_artifact(str(encoding_path), BUNDLE_ARTIFACTS)


def _log_model(booster, valid: pa.Table, features: list[Feature], model_name: str) -> str:
    """Log the booster with a signature and an input example, register it and return the version."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    sample = feature_matrix(valid.slice(0, 5), features)
    example_frame = pd.DataFrame({f.name: sample[:, j] for j, f in enumerate(features)})
    info = mlflow.lightgbm.log_model(
        booster, name="model", registered_model_name=model_name, input_example=example_frame,
        signature=infer_signature(example_frame, booster.predict(sample)),
    )
    return str(info.registered_model_version)


def fit_log_register(
    train: pa.Table, valid: pa.Table, features: list[Feature], encoding_path: Path, *, model_name: str,
    context: RunContext, lgb_params: dict, num_boost_round: int, negative_rate: float = 1.0,
    sampling_seed: int | None = None, early_stopping_rounds: int = 0, alias: str | None = CHAMPION,
    model_path: Path | None = None, training_rows: int | None = None,
) -> TrainResult:
    """Train, log everything to a new MLflow run, register a model version and point ``alias`` at it.

    Validation metrics are computed on predictions corrected for
    ``negative_rate``, so they describe the full traffic. With ``model_path``
    the model file is also written there (the file the reproducibility
    check compares).
    """
    import mlflow

    params = dict(DEFAULT_PARAMS, **(lgb_params or {}))
    commit = git_commit(Path(__file__).parent)
    training_digest = dataset_digest([d for i in context.inputs if i.context == "training" for d in i.paths]) \
        if any(i.context == "training" for i in context.inputs) else ""

    mlflow.set_experiment(context.experiment)
    with mlflow.start_run() as run:
        mlflow.set_tags({"mlflow.source.git.commit": commit, "ctr.git_commit": commit,
                         "ctr.training_data.sha256": training_digest, **context.tags})
        mlflow.log_params(flatten_params({**params, "num_boost_round": num_boost_round,
                                          "early_stopping_rounds": early_stopping_rounds,
                                          "negative_rate": negative_rate, **context.params}))
        for dataset in context.inputs:
            log_input(dataset)

        # With early stopping, predict() and save_model() use the best iteration by default.
        booster = fit_booster(params, num_boost_round, train, valid, features, early_stopping_rounds)
        raw = booster.predict(feature_matrix(valid, features))
        predictions = correct_negative_sampling(raw, negative_rate)
        metrics = {f"valid_{k}": v for k, v in evaluate(valid.column(LABEL).to_numpy(), predictions).items()}
        metrics.update(train_rows=train.num_rows, valid_rows=valid.num_rows,
                       trees=booster.best_iteration or booster.current_iteration())
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})

        sampling = {"negative_rate": negative_rate}
        if sampling_seed is not None:
            sampling["seed"] = sampling_seed
        _log_bundle_artifacts(features, encoding_path, {
            "training_data": {"sha256": training_digest, "rows": training_rows or train.num_rows + valid.num_rows},
            "metrics": metrics,
            "git_commit": commit,
            "sampling": sampling,
        })
        if model_path is not None:
            Path(model_path).parent.mkdir(parents=True, exist_ok=True)
            booster.save_model(str(model_path))
        version = _log_model(booster, valid, features, model_name)
        client = mlflow.MlflowClient()
        client.set_model_version_tag(model_name, version, "ctr.sampling.negative_rate", str(negative_rate))
        if alias:
            client.set_registered_model_alias(model_name, alias, version)
    logger.info("run %s registered %s version %s: valid AUC %.4f, logloss %.4f",
                run.info.run_id, model_name, version, metrics.get("valid_auc", float("nan")),
                metrics["valid_logloss"])
    return TrainResult(run.info.run_id, model_name, version, metrics)


def train_and_register(
    features_dir: Path, encoding_path: Path, *, model_name: str, experiment: str,
    categorical: list[str], lgb_params: dict | None = None, num_boost_round: int = 100,
    valid_fraction: float = 0.1, extra_params: dict | None = None, alias: str = CHAMPION,
) -> TrainResult:
    """Train on one feature folder (the later ``valid_fraction`` of rows validates), log, register, alias.

    MLflow's tracking URI comes from the environment (``MLFLOW_TRACKING_URI``).
    """
    table = read_features(features_dir)
    features = features_of(table.schema, categorical)
    train, valid = time_split(table, valid_fraction)
    partitions = partition_files(features_dir)
    context = RunContext(
        experiment=experiment,
        params={"valid_fraction": valid_fraction, **(extra_params or {})},
        inputs=[InputDataset("features", partitions, "training", str(Path(features_dir).resolve()))],
    )
    return fit_log_register(train, valid, features, Path(encoding_path), model_name=model_name, context=context,
                            lgb_params=lgb_params or {}, num_boost_round=num_boost_round, alias=alias,
                            training_rows=table.num_rows)


def train_on_splits(
    train_dir: Path, valid_dir: Path, encoding_path: Path, *, model_name: str, context: RunContext,
    categorical: list[str], feature_names: list[str], lgb_params: dict, num_boost_round: int,
    negative_rate: float = 1.0, sampling_seed: int | None = None, early_stopping_rounds: int = 0,
    alias: str | None = CHALLENGER, model_path: Path | None = None,
) -> TrainResult:
    """Train on the pipeline's train split, validate on its later valid split, log and register.

    The training inputs (train and valid partitions) are added to the run's inputs.
    """
    train = read_features(train_dir)
    valid = read_features(valid_dir)
    features = features_of(train.schema, categorical, feature_names)
    context.inputs = [InputDataset("train", partition_files(train_dir), "training"),
                      InputDataset("valid", partition_files(valid_dir), "validation"), *context.inputs]
    return fit_log_register(train, valid, features, Path(encoding_path), model_name=model_name, context=context,
                            lgb_params=lgb_params, num_boost_round=num_boost_round, negative_rate=negative_rate,
                            sampling_seed=sampling_seed, early_stopping_rounds=early_stopping_rounds,
                            alias=alias, model_path=model_path)
