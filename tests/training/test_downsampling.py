"""Negative downsampling: the correction formula, the scorer applying it, and calibration on real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ctr_inference.bundle import load_bundle, write_metadata
from ctr_inference.calibration import correct_negative_sampling, negative_rate_of
from ctr_inference.contract import feature_matrix
from ctr_inference.errors import BundleIncompatibleError
from ctr_inference.scorer import Scorer
from ctr_training.datasets import CRITEO
from ctr_training.train import features_of, fit_booster, read_features

from tests.helpers import feature_table, write_tiny_bundle
from tests.training.conftest import DOWNSAMPLED_RATE

# Tolerance of the corrected mean predicted CTR against the observed click rate of
# the unsampled test split (3,061 rows, CTR 0.253, so a standard error of 0.008). The
# model trained without downsampling lands 0.013 below it (the training split clicks
# less, 0.217), and the corrected downsampled one 0.004 below.
MEAN_CTR_TOLERANCE = 0.02


def test_rate_one_is_identity():
    predictions = np.array([0.01, 0.2, 0.9])
    np.testing.assert_array_equal(correct_negative_sampling(predictions, 1.0), predictions)


def test_correction_inverts_sampling_odds():
    true_ctr = np.array([0.001, 0.02, 0.3, 0.7])
    rate = 0.1
    # Keeping a share `rate` of negatives divides the negatives' weight, so the odds grow by 1 / rate.
    sampled_odds = true_ctr / (1 - true_ctr) / rate
    sampled_ctr = sampled_odds / (1 + sampled_odds)
    np.testing.assert_allclose(correct_negative_sampling(sampled_ctr, rate), true_ctr, rtol=1e-12)


def test_correction_lowers_and_keeps_order():
    predictions = np.linspace(0.01, 0.99, 50)
    corrected = correct_negative_sampling(predictions, 0.25)
    assert np.all(corrected < predictions)
    assert np.all(np.diff(corrected) > 0)


@pytest.mark.parametrize("rate", [0.0, -0.5, 1.5])
def test_invalid_rate_raises(rate):
    with pytest.raises(ValueError, match="negative_rate must be in"):
        correct_negative_sampling(np.array([0.5]), rate)


@pytest.mark.parametrize(("metadata", "rate"), [
    ({}, 1.0),
    ({"sampling": {"negative_rate": 0.25, "seed": 3}}, 0.25),
    ({"sampling": {"negative_rate": 1}}, 1.0),
])
def test_rate_read_from_metadata(metadata, rate):
    assert negative_rate_of(metadata) == rate


@pytest.mark.parametrize("rate", [0, 2, "0.5", True])
def test_invalid_metadata_rate_raises(rate):
    with pytest.raises(BundleIncompatibleError, match="sampling.negative_rate"):
        negative_rate_of({"sampling": {"negative_rate": rate}})


def with_sampling(bundle_dir: Path, rate) -> Path:
    metadata = json.loads((bundle_dir / "bundle.json").read_text())
    metadata.pop("files")
    metadata.pop("format_version")
    metadata["sampling"] = {"negative_rate": rate}
    write_metadata(bundle_dir, metadata)
    return bundle_dir


def test_scorer_applies_bundle_rate(tmp_path):
    plain = load_bundle(write_tiny_bundle(tmp_path / "plain"))
    sampled = load_bundle(with_sampling(write_tiny_bundle(tmp_path / "sampled"), 0.2))
    table = feature_table(200, seed=5)
    raw = Scorer(plain, threads=1).predict(table)
    corrected = Scorer(sampled, threads=1).predict(table)
    np.testing.assert_allclose(corrected, raw / (raw + (1 - raw) / 0.2), rtol=1e-12)
    assert Scorer(plain, threads=1).negative_rate == 1.0


def test_scorer_rejects_invalid_rate(tmp_path):
    bundle = load_bundle(with_sampling(write_tiny_bundle(tmp_path / "bad"), 0))
    with pytest.raises(BundleIncompatibleError):
        Scorer(bundle, threads=1)


def train_on(features, trees: int = 60):
    out = Path(features.out_dir)
    train, valid = read_features(out / "train"), read_features(out / "valid")
    names = features_of(train.schema, list(CRITEO.categorical), CRITEO.feature_columns)
    params = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 50, "learning_rate": 0.05,
              "verbosity": -1, "num_threads": 2, "seed": 3, "deterministic": True, "force_row_wise": True}
    return fit_booster(params, trees, train, valid, names), names


@pytest.fixture(scope="module")
def test_split(criteo_features_downsampled):
    return read_features(Path(criteo_features_downsampled.out_dir) / "test")


def test_corrected_mean_ctr_matches_observed(criteo_features_downsampled, test_split):
    booster, features = train_on(criteo_features_downsampled)
    raw = booster.predict(feature_matrix(test_split, features))
    corrected = correct_negative_sampling(raw, DOWNSAMPLED_RATE)
    observed = float(np.mean(test_split.column("label").to_numpy()))

    assert abs(float(np.mean(corrected)) - observed) < MEAN_CTR_TOLERANCE
    # Without the correction the model overstates CTR by far more than the tolerance.
    assert float(np.mean(raw)) - observed > 5 * MEAN_CTR_TOLERANCE


def test_downsampled_model_ranks_like_full_model(criteo_features, criteo_features_downsampled, test_split):
    """Downsampling changes the probabilities' scale, not the ranking: AUCs stay close."""
    from sklearn.metrics import roc_auc_score

    labels = test_split.column("label").to_numpy()
    aucs = []
    for features in (criteo_features, criteo_features_downsampled):
        booster, names = train_on(features)
        aucs.append(roc_auc_score(labels, booster.predict(feature_matrix(test_split, names))))
    assert aucs[1] > 0.70
    assert abs(aucs[0] - aucs[1]) < 0.02


def test_report_records_rate(criteo_features_downsampled):
    assert criteo_features_downsampled.report["sampling"]["negative_rate"] == DOWNSAMPLED_RATE
    sampled = criteo_features_downsampled.report["splits"]["train_sampled"]["rows"]
    assert sampled == pq.read_table(Path(criteo_features_downsampled.out_dir) / "train").num_rows
