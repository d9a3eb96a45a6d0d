"""Entry points of the DVC pipeline's stages: ``python -m ctr_training.stages STAGE``.

``dvc.yaml`` runs three stages from the repository root; every setting comes
from ``params.yaml``, and every path is fixed relative to the root:

- ``features``: Spark feature job on ``data/raw/<dataset>`` into
  ``data/features/{train,valid,test,test_parsed}``, ``encoding.parquet`` and
  ``report.json`` (see ``ctr_training.splits``).
- ``train``: LightGBM on the train split, validated on the valid split, logged
  to MLflow and registered with the ``challenger`` alias. Writes
  ``models/model.lgb`` and ``models/run.json`` (MLflow run id, model version).
- ``evaluate``: metrics on the valid and test splits, calibration by decile
  and plots, logged to the same MLflow run (``metrics/evaluate.json``). Then
  it runs the promotion gate (``ctr_training.gate``, ``metrics/gate.json``). The gate
  shares the stage because every stage process pays about 10 s of CPU to
  import MLflow, LightGBM and scikit-learn. ``gate`` alone reruns the gate.

MLflow's tracking server comes from ``MLFLOW_TRACKING_URI``; without it the
stages use the SQLite store under ``.ctr/mlflow`` that ``ctr mlflow-ui`` serves.
The train stage prints ``CTR_MLFLOW_RUN_ID=<run id>`` so that whoever runs the
pipeline (the Kubernetes training Job) can report the run.

The features stage also runs under ``spark-submit`` on a cluster, with
``--input`` and ``--output`` URIs in place of the local folders (see
docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import yaml
from ctr_inference.errors import CtrError

logger = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"
RAW_DIR = Path("data/raw")
FEATURES_DIR = Path("data/features")
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
MODEL_FILE = MODELS_DIR / "model.lgb"
RUN_FILE = MODELS_DIR / "run.json"
RUN_ID_MARKER = "CTR_MLFLOW_RUN_ID="
LOCAL_MLFLOW_DIR = Path(".ctr/mlflow")
STAGES = ("features", "train", "evaluate", "gate")


class StageError(CtrError):
    """A stage cannot run: a missing input, parameter or earlier stage's output."""


def load_params(root: Path, path: str = PARAMS_FILE) -> dict:
    """Read ``params.yaml`` from the repository root.

    Raises:
        StageError: the file is missing or not a YAML mapping.
    """
    file = Path(root) / path
    if not file.is_file():
        raise StageError(f"parameters file {file} does not exist")
    params = yaml.safe_load(file.read_text())
    if not isinstance(params, dict):
        raise StageError(f"parameters file {file} is not a YAML mapping")
    return params


def _section(params: dict, name: str) -> dict:
    value = params.get(name)
    if not isinstance(value, dict):
        raise StageError(f"params.yaml has no {name!r} section")
    return value


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(temporary, path)


def _finite(data):
    """Replace NaN and infinities (undefined metrics) by None, so the JSON stays valid."""
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def configure_mlflow(root: Path, experiment: str) -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI``, or at the local SQLite store under ``.ctr/mlflow``.

    For the local store the experiment is created with an artifact folder
    beside the database, so runs never write into the working directory.
    Returns the tracking URI.

    Raises:
        StageError: the local store's experiment keeps its artifacts behind an
            MLflow server (``mlflow-artifacts:``), which only that server can reach.
    """
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        mlflow.set_tracking_uri(uri)
        return uri
    store = (Path(root) / LOCAL_MLFLOW_DIR).resolve()
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is None:
        mlflow.create_experiment(experiment, artifact_location=(store / "artifacts" / experiment).as_uri())
    elif existing.artifact_location.startswith("mlflow-artifacts:"):
        raise StageError(f"experiment {experiment!r} in {uri} stores artifacts through an MLflow server; "
                         "start it (ctr mlflow-ui) and set MLFLOW_TRACKING_URI to its URL")
    logger.info("MLFLOW_TRACKING_URI is not set; logging to %s", uri)
    return uri


def dvc_versions(root: Path, dataset: str) -> dict[str, str]:
    """Return DVC's content hashes of the raw data and the feature splits, from ``dvc.lock``.

    DVC writes each stage's lock entry as soon as the stage finishes, so the
    train stage reads the hashes of the features it trains on. Outside DVC (no
    lock file, or no features entry) the result is empty.
    """
    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        return {}
    stage = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get("features", {})
    versions = {}
    for entry in stage.get("deps", []) + stage.get("outs", []):
        path = entry.get("path", "")
        if path == str(RAW_DIR / dataset) or path.startswith(str(FEATURES_DIR)):
            versions[f"dvc.md5.{path}"] = entry.get("md5", "")
    return versions


def git_state(root: Path) -> dict[str, str]:
    """Return the commit and whether tracked files differ from it (``git status``), for run tags."""
    from ctr_training.train import git_commit

    tags = {"ctr.git_commit": git_commit(Path(root))}
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                check=True, capture_output=True, text=True).stdout
        tags["ctr.git_dirty"] = str(bool(status.strip())).lower()
    except (OSError, subprocess.CalledProcessError):
        tags["ctr.git_dirty"] = "unknown"
    return tags


def run_features(params: dict, root: Path, spark=None, inputs: list[str] | None = None,
                 output: str | None = None) -> dict:
    """Run the features stage and return its report.

    ``spark`` reuses a running session (tests); otherwise one is started on
    ``spark.master`` and stopped at the end.
    """
    from ctr_training.datasets import spec_from_params
    from ctr_training.features import spark_session
    from ctr_training.splits import SplitSettings, run_training_feature_job

    spec = spec_from_params(params)
    features = _section(params, "features")
    split = _section(params, "split")
    sampling = _section(params, "sampling")
    spark_settings = params.get("spark") or {}
    settings = SplitSettings(
        valid_fraction=float(split["valid_fraction"]), test_fraction=float(split["test_fraction"]),
        relative_error=float(split.get("relative_error", 0.0)),
        negative_rate=float(sampling["negative_rate"]), sampling_seed=int(sampling["seed"]),
    )
    logs = inputs or [str(Path(root) / RAW_DIR / spec.name)]
    out_dir = output or str(Path(root) / FEATURES_DIR)

    own_session = spark is None
    if own_session:
        master = os.environ.get("CTR_SPARK_MASTER") or spark_settings.get("master")
        spark = spark_session(master=master, app_name=f"ctr-features-{spec.name}",
                              driver_memory=str(spark_settings.get("driver_memory", "4g")))
        # ERROR, not WARN: every read warns that the block-offset window of read_lines
        # runs on one partition, which is intended (one row per file block).
        spark.sparkContext.setLogLevel("ERROR")
    try:
        result = run_training_feature_job(
            spark, logs, out_dir, spec=spec, settings=settings, min_count=int(features["min_count"]),
            partitions=int(features["partitions"]),
            max_malformed_fraction=float(features["max_malformed_fraction"]),
        )
    finally:
        if own_session:
            spark.stop()
    return result.report


def run_train(params: dict, root: Path) -> dict:
    """Run the train stage: train, log and register the challenger; write the model file and run record."""
    from ctr_training.datasets import spec_from_params
    from ctr_training.splits import REPORT_FILE
    from ctr_training.train import (
        CHALLENGER,
        InputDataset,
        RunContext,
        flatten_params,
        train_on_splits,
    )

    root = Path(root)
    spec = spec_from_params(params)
    experiment = _section(params, "mlflow")["experiment"]
    configure_mlflow(root, experiment)
    sampling = _section(params, "sampling")
    train_settings = _section(params, "train")
    features_dir = root / FEATURES_DIR
    for name in ("train", "valid", "encoding.parquet"):
        if not (features_dir / name).exists():
            raise StageError(f"{features_dir / name} does not exist; run the features stage first (dvc repro)")

    raw_dir = root / RAW_DIR / spec.name
    versions = dvc_versions(root, spec.name)
    inputs = []
    if raw_dir.is_dir():
        raw_files = sorted(p for p in raw_dir.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
        if raw_files:
            raw_md5 = versions.get(f"dvc.md5.{RAW_DIR / spec.name}", "").removesuffix(".dir")
            inputs.append(InputDataset(f"raw-{spec.name}", raw_files, "source", str(raw_dir.resolve()),
                                       dvc_md5=raw_md5))
    tags = {"ctr.dataset": spec.name, **git_state(root), **versions}
    report_path = features_dir / REPORT_FILE
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        tags["ctr.features.rows"] = str(report.get("rows"))
    context = RunContext(experiment=experiment, params=flatten_params(params), tags=tags, inputs=inputs)

    result = train_on_splits(
        features_dir / "train", features_dir / "valid", features_dir / "encoding.parquet",
        model_name=spec.registered_model, context=context, categorical=list(spec.categorical),
        feature_names=spec.feature_columns, lgb_params=dict(_section(params, "lightgbm")),
        num_boost_round=int(train_settings["num_boost_round"]),
        early_stopping_rounds=int(train_settings.get("early_stopping_rounds", 0)),
        negative_rate=float(sampling["negative_rate"]), sampling_seed=int(sampling["seed"]),
        alias=CHALLENGER, model_path=root / MODEL_FILE,
    )
    record = {"run_id": result.run_id, "model_name": result.model_name, "model_version": result.model_version,
              "dataset": spec.name, "negative_rate": float(sampling["negative_rate"])}
    _write_json(root / RUN_FILE, record)
    _write_json(root / METRICS_DIR / "train.json", _finite(result.metrics))
    print(f"{RUN_ID_MARKER}{result.run_id}", flush=True)
    return record


def _run_record(root: Path) -> dict:
    path = Path(root) / RUN_FILE
    if not path.is_file():
        raise StageError(f"{path} does not exist; run the train stage first (dvc repro)")
    return json.loads(path.read_text())


def run_evaluate(params: dict, root: Path) -> dict:
    """Run the evaluate stage: valid and test metrics, calibration and plots, logged to the training run."""
    import lightgbm
    import mlflow
    from ctr_inference.calibration import correct_negative_sampling
    from ctr_inference.contract import LABEL, feature_matrix

    from ctr_training.datasets import spec_from_params
    from ctr_training.evaluate import log_evaluation
    from ctr_training.train import features_of, partition_files, read_features

    root = Path(root)
    spec = spec_from_params(params)
    configure_mlflow(root, _section(params, "mlflow")["experiment"])
    bins = int(_section(params, "evaluate")["calibration_bins"])
    record = _run_record(root)
    booster = lightgbm.Booster(model_file=str(root / MODEL_FILE))

    splits = {}
    for name in ("valid", "test"):
        table = read_features(root / FEATURES_DIR / name)
        by_name = {f.name: f for f in features_of(table.schema, list(spec.categorical), booster.feature_name())}
        features = [by_name[n] for n in booster.feature_name()]
        raw = booster.predict(feature_matrix(table, features))
        splits[name] = (table.column(LABEL).to_numpy(), correct_negative_sampling(raw, record["negative_rate"]))

    from ctr_training.train import InputDataset, log_input

    with mlflow.start_run(run_id=record["run_id"]):
        log_input(InputDataset("test", partition_files(root / FEATURES_DIR / "test"), "test"))
        evaluation = log_evaluation(splits, booster, bins)
    result = {"run_id": record["run_id"], "model_version": record["model_version"], **evaluation["metrics"]}
    _write_json(root / METRICS_DIR / "evaluate.json", _finite(result))
    _write_json(root / PLOTS_DIR / "calibration_test.json", _finite({"calibration": evaluation["calibration"]["test"]}))
    result["gate"] = run_gate(params, root)
    return result


def run_gate(params: dict, root: Path) -> dict:
    """Run the gate stage: compare the challenger with the champion and promote it when it is not worse."""
    from ctr_training import gate
    from ctr_training.splits import TEST_PARSED

    root = Path(root)
    configure_mlflow(root, _section(params, "mlflow")["experiment"])
    settings = _section(params, "gate")
    record = _run_record(root)
    decision = gate.run_gate(record["model_name"], record["model_version"], root / FEATURES_DIR / TEST_PARSED,
                             float(settings["tolerance"]))
    result = {"run_id": record["run_id"], **decision.to_dict()}
    _write_json(root / METRICS_DIR / "gate.json", _finite(result))
    print(f"gate: {decision.decision} {decision.model_name} version {decision.challenger_version}: "
          f"{decision.reason}", flush=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ctr_training.stages",
                                     description="Run one stage of the DVC training pipeline.")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    parser.add_argument("--params", default=PARAMS_FILE, help="parameters file under the root (default: params.yaml)")
    parser.add_argument("--input", action="append", metavar="URI",
                        help="features stage: log files or folders to read instead of data/raw/<dataset>")
    parser.add_argument("--output", metavar="URI",
                        help="features stage: folder to write instead of data/features (s3:// on a cluster)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        params = load_params(args.root, args.params)
        if args.stage == "features":
            result = run_features(params, args.root, inputs=args.input, output=args.output)
        else:
            result = {"train": run_train, "evaluate": run_evaluate, "gate": run_gate}[args.stage](params, args.root)
    except CtrError as error:
        print(f"stage {args.stage}: error: {error}", file=sys.stderr)
        return 1
    logger.info("stage %s done: %s", args.stage, json.dumps(_finite(result), sort_keys=True)[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
