"""Evaluation of a CTR model: ranking, probability quality, calibration and the plots people look at.

Metrics per split (each key is prefixed with the split name when logged):

- ``auc``: ROC AUC, the ranking quality.
- ``logloss``: mean binary cross-entropy, the quality of the probabilities.
- ``ne``: normalized entropy, logloss divided by the entropy of the split's
  observed click rate; below 1 means better than always predicting that rate.
- ``calibration``: mean predicted CTR divided by the observed CTR (1 is calibrated).
- ``ece``: expected calibration error over equal-count bins of the predictions.
- ``mean_ctr_predicted``, ``mean_ctr_observed``, ``rows``.

Predictions are evaluated after the negative-sampling correction, so the
numbers describe the full traffic that the scorer scores.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_EPSILON = 1e-15


def log_loss(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean binary cross-entropy, with predictions clipped away from 0 and 1."""
    p = np.clip(np.asarray(predictions, dtype=np.float64), _EPSILON, 1 - _EPSILON)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def normalized_entropy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Logloss divided by the entropy of the observed click rate (NaN when the rate is 0 or 1)."""
    rate = float(np.mean(labels))
    if rate in (0.0, 1.0):
        return float("nan")
    entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    return float(log_loss(labels, predictions) / entropy)


def calibration_table(labels: np.ndarray, predictions: np.ndarray, bins: int = 10) -> list[dict]:
    """Mean predicted and observed CTR in ``bins`` equal-count bins of ascending prediction.

    Ties keep their row order (a stable sort), so the table is reproducible.
    """
    order = np.argsort(predictions, kind="stable")
    table = []
    for index, chunk in enumerate(np.array_split(order, bins)):
        if len(chunk) == 0:
            continue
        table.append({
            "bin": index + 1,
            "rows": len(chunk),
            "mean_predicted": float(np.mean(predictions[chunk])),
            "observed_ctr": float(np.mean(labels[chunk])),
            "min_predicted": float(np.min(predictions[chunk])),
            "max_predicted": float(np.max(predictions[chunk])),
        })
    return table


def expected_calibration_error(table: list[dict]) -> float:
    total = sum(row["rows"] for row in table)
    return float(sum(row["rows"] / total * abs(row["mean_predicted"] - row["observed_ctr"]) for row in table))


def metrics(labels: np.ndarray, predictions: np.ndarray, bins: int = 10) -> dict:
    """Return the metrics listed in the module docstring for one split."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    predictions = np.asarray(predictions, dtype=np.float64)
    observed = float(np.mean(labels))
    predicted = float(np.mean(predictions))
    result = {
        "rows": len(labels),
        "logloss": log_loss(labels, predictions),
        "ne": normalized_entropy(labels, predictions),
        "mean_ctr_predicted": predicted,
        "mean_ctr_observed": observed,
        "calibration": predicted / observed if observed > 0 else float("nan"),
        "ece": expected_calibration_error(calibration_table(labels, predictions, bins)),
    }
    if len(np.unique(labels)) == 2:
        result["auc"] = float(roc_auc_score(labels, predictions))
    return result


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]]):
    """ROC curves of several splits on one axis, with AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    figure, axis = plt.subplots(figsize=(5.5, 5))
    for name, (labels, predictions) in curves.items():
        if len(np.unique(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, predictions)
        axis.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, predictions):.4f})")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def calibration_figure(tables: dict[str, list[dict]]):
    """Observed CTR against mean predicted CTR per bin, one line per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 5))
    upper = 0.0
    for name, table in tables.items():
        predicted = [row["mean_predicted"] for row in table]
        observed = [row["observed_ctr"] for row in table]
        upper = max(upper, *predicted, *observed)
        axis.plot(predicted, observed, marker="o", label=name)
    axis.plot([0, upper], [0, upper], linestyle="--", color="grey", linewidth=0.8, label="calibrated")
    axis.set(xlabel="mean predicted CTR", ylabel="observed CTR", title="Calibration by decile")
    axis.legend(loc="upper left")
    figure.tight_layout()
    return figure


def feature_importance(booster) -> list[dict]:
    """Gain and split counts per feature, largest gain first (ties by name)."""
    names = booster.feature_name()
    gains = booster.feature_importance("gain")
    splits = booster.feature_importance("split")
    rows = [{"feature": n, "gain": float(g), "splits": int(s)} for n, g, s in zip(names, gains, splits)]
    return sorted(rows, key=lambda row: (-row["gain"], row["feature"]))


def importance_figure(importance: list[dict], top: int = 30):
    """Horizontal bar chart of the ``top`` features by total gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = importance[:top][::-1]
    figure, axis = plt.subplots(figsize=(6, 0.25 * len(shown) + 1.2))
    axis.barh([row["feature"] for row in shown], [row["gain"] for row in shown])
    axis.set(xlabel="total gain", title=f"Feature importance (top {len(shown)})")
    figure.tight_layout()
    return figure


def log_evaluation(splits: dict[str, tuple[np.ndarray, np.ndarray]], booster, bins: int = 10) -> dict:
    """Log metrics, calibration tables, importance and plots of several splits to the active MLflow run.

    Returns the metrics as logged (``<split>_<metric>``) with the calibration tables.
    """
    import matplotlib.pyplot as plt
    import mlflow

    logged, tables = {}, {}
    for name, (labels, predictions) in splits.items():
        for key, value in metrics(labels, predictions, bins).items():
            logged[f"{name}_{key}"] = value
        tables[name] = calibration_table(labels, predictions, bins)
    mlflow.log_metrics({k: v for k, v in logged.items() if np.isfinite(v)})

    importance = feature_importance(booster)
    with tempfile.TemporaryDirectory() as scratch:
        for name, table in tables.items():
            path = Path(scratch) / f"calibration_{name}.json"
            path.write_text(json.dumps(table, indent=2) + "\n")
            mlflow.log_artifact(str(path), "evaluation")
        path = Path(scratch) / "feature_importance.json"
        path.write_text(json.dumps(importance, indent=2) + "\n")
        mlflow.log_artifact(str(path), "evaluation")

    for figure, name in ((roc_figure(splits), "roc.png"), (calibration_figure(tables), "calibration.png"),
                         (importance_figure(importance), "feature_importance.png")):
        mlflow.log_figure(figure, f"plots/{name}")
        plt.close(figure)
    return {"metrics": logged, "calibration": tables, "feature_importance": importance}
