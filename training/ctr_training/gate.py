"""The promotion gate: a challenger becomes ``champion`` only if it is not worse on fresh data.

Both models are scored on the challenger's test split, the latest rows of
the training window, which neither model trained on. Each model encodes the
split's categorical values with its own encoding table (from its run's
``bundle/`` artifacts) and has its predictions corrected for its own
negative sampling rate, exactly as the scorer would serve it. The challenger
is promoted when

    challenger logloss <= champion logloss + tolerance

where ``tolerance`` (``gate.tolerance`` in ``params.yaml``) is in logloss
units. With no champion yet, the challenger is promoted. The decision, the
reason and both loglosses are logged to the challenger's MLflow run and
tagged on its model version.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ctr_inference.calibration import correct_negative_sampling
from ctr_inference.contract import CATEGORICAL_FREQUENCY, LABEL, Feature, feature_matrix
from ctr_inference.errors import CtrError

from ctr_training.evaluate import log_loss
from ctr_training.features import encode_column, encoding_lookups
from ctr_training.train import (
    BUNDLE_ARTIFACTS,
    CHAMPION,
    ENCODING_FILE,
    FEATURES_FILE,
    read_features,
)

logger = logging.getLogger(__name__)

PROMOTED = "promoted"
REJECTED = "rejected"


class GateError(CtrError):
    """The gate cannot compare the models (a model lacks artifacts or the split lacks its columns)."""


@dataclass
class RegisteredModel:
    """A registered model version loaded for scoring: booster, features, encoding and sampling rate."""

    name: str
    version: str
    run_id: str
    booster: object
    features: list[Feature]
    encoding: pa.Table
    negative_rate: float

    def predict(self, parsed: pa.Table) -> np.ndarray:
        """Encode a parsed (not yet encoded) table with this model's table and return corrected CTRs.

        Raises:
            GateError: the table lacks a column the model needs.
        """
        categorical = [f.name for f in self.features if f.kind == CATEGORICAL_FREQUENCY]
        absent = [f.name for f in self.features if f.name not in parsed.column_names]
        if absent:
            raise GateError(f"model {self.name} version {self.version} needs columns {absent} "
                            "that the test split does not have")
        lookups = encoding_lookups(self.encoding, categorical)
        for name in categorical:
            encoded = encode_column(parsed.column(name).combine_chunks(), *lookups[name])
            parsed = parsed.set_column(parsed.schema.get_field_index(name), name, encoded)
        raw = self.booster.predict(feature_matrix(parsed, self.features))
        return correct_negative_sampling(raw, self.negative_rate)


def load_registered(name: str, version: str) -> RegisteredModel:
    """Download a registered version's model file and its run's bundle artifacts.

    Raises:
        GateError: the run lacks the model file, ``features.json`` or the encoding table.
    """
    import lightgbm
    import mlflow

    client = mlflow.MlflowClient()
    model_version = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=f"{scratch}/m"))
        extras = Path(mlflow.artifacts.download_artifacts(run_id=model_version.run_id,
                                                         artifact_path=BUNDLE_ARTIFACTS, dst_path=f"{scratch}/b"))
        paths = {"model": model_dir / "model.lgb", "features": extras / FEATURES_FILE,
                 "encoding": extras / ENCODING_FILE}
        for path in paths.values():
            if not path.is_file():
                raise GateError(f"model {name} version {version} (run {model_version.run_id}) has no {path.name}")
        booster = lightgbm.Booster(model_file=str(paths["model"]))
        facts = json.loads(paths["features"].read_text())
        encoding = pq.read_table(paths["encoding"])
    return RegisteredModel(
        name=name, version=str(version), run_id=model_version.run_id, booster=booster,
        features=[Feature.from_dict(f) for f in facts["features"]], encoding=encoding,
        negative_rate=float(facts.get("sampling", {}).get("negative_rate", 1.0)),
    )


@dataclass
class GateDecision:
    """The outcome of one gate run, as logged."""

    model_name: str
    challenger_version: str
    champion_version: str | None
    challenger_logloss: float
    champion_logloss: float | None
    tolerance: float
    promoted: bool
    reason: str
    test_rows: int

    @property
    def decision(self) -> str:
        return PROMOTED if self.promoted else REJECTED

    def to_dict(self) -> dict:
        return dict(asdict(self), decision=self.decision)


def decide(challenger_logloss: float, champion_logloss: float | None, tolerance: float) -> tuple[bool, str]:
    """Apply the gate rule and return (promoted, reason)."""
    if champion_logloss is None:
        return True, "no champion yet"
    limit = champion_logloss + tolerance
    if challenger_logloss <= limit:
        return True, (f"challenger logloss {challenger_logloss:.6f} <= champion logloss "
                      f"{champion_logloss:.6f} + tolerance {tolerance}")
    return False, (f"challenger logloss {challenger_logloss:.6f} > champion logloss "
                   f"{champion_logloss:.6f} + tolerance {tolerance}")


def current_champion(name: str, alias: str = CHAMPION) -> str | None:
    """Return the version the alias points at, or None when the alias is not set."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        logger.info("model %s has no %s alias (%s)", name, alias, error.error_code)
        return None


def run_gate(model_name: str, challenger_version: str, test_parsed_dir: Path, tolerance: float,
             alias: str = CHAMPION) -> GateDecision:
    """Compare the challenger with the current champion on the test split and promote on success.

    Raises:
        GateError: a model cannot be loaded or scored on the split.
        ValueError: ``tolerance`` is negative.
    """

    if tolerance < 0:
        raise ValueError(f"gate tolerance must be >= 0, got {tolerance}")
    parsed = read_features(Path(test_parsed_dir))
    labels = parsed.column(LABEL).to_numpy()
    challenger = load_registered(model_name, str(challenger_version))
    challenger_logloss = log_loss(labels, challenger.predict(parsed))

    champion_version = current_champion(model_name, alias)
    champion_logloss = None
    if champion_version is not None and champion_version != challenger.version:
        champion = load_registered(model_name, champion_version)
        champion_logloss = log_loss(labels, champion.predict(parsed))
    elif champion_version == challenger.version:
        champion_logloss = challenger_logloss

    if champion_version == challenger.version:
        promoted, reason = True, "the challenger is already the champion"
    else:
        promoted, reason = decide(challenger_logloss, champion_logloss, tolerance)
    decision = GateDecision(model_name, challenger.version, champion_version, challenger_logloss,
                            champion_logloss, tolerance, promoted, reason, parsed.num_rows)
    _record(decision, challenger.run_id, alias)
    logger.info("gate %s %s version %s: %s", decision.decision, model_name, challenger.version, reason)
    return decision


def _record(decision: GateDecision, run_id: str, alias: str) -> None:
    """Log the decision to the challenger's run and model version, then move the alias if promoted."""
    import mlflow

    client = mlflow.MlflowClient()
    metrics = {"gate_challenger_logloss": decision.challenger_logloss, "gate_tolerance": decision.tolerance,
               "gate_promoted": float(decision.promoted)}
    if decision.champion_logloss is not None:
        metrics["gate_champion_logloss"] = decision.champion_logloss
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"ctr.gate.decision": decision.decision, "ctr.gate.reason": decision.reason,
                         "ctr.gate.champion_version": decision.champion_version or "none"})
        mlflow.log_dict(decision.to_dict(), "gate/decision.json")
    for key, value in (("ctr.gate.decision", decision.decision), ("ctr.gate.reason", decision.reason),
                       ("ctr.gate.champion_version", decision.champion_version or "none")):
        client.set_model_version_tag(decision.model_name, decision.challenger_version, key, value)
    if decision.promoted and decision.champion_version != decision.challenger_version:
        client.set_registered_model_alias(decision.model_name, alias, decision.challenger_version)
