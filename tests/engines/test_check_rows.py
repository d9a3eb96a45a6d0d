"""Check rows cover ordinary rows, missing values, every threshold and odd categorical values."""

from __future__ import annotations

import numpy as np
import pytest
from ctr_inference.check_rows import (
    ABOVE,
    BELOW,
    CATEGORICAL,
    MISSING,
    NATIVE_HUGE_CODE,
    ORDINARY,
    THRESHOLD,
    make_check_rows,
    read_check_rows,
    split_points,
    write_check_rows,
)

from tests.engines.conftest import (
    CATEGORICAL_COLUMNS,
    FREQUENCY,
    NATIVE,
    features_for,
    train_tiny,
    training_rows,
)


@pytest.fixture(scope="module", params=[FREQUENCY, NATIVE])
def model(request):
    return request.param, train_tiny(request.param)


def test_every_threshold_exact_and_neighbours(model):
    encoding, booster = model
    rows = make_check_rows(booster, features_for(encoding))
    points = split_points(booster.dump_model())
    numeric = {column: entry.thresholds for column, entry in points.items() if entry.thresholds}
    assert numeric, "expected the tiny model to have numerical splits"
    for column, thresholds in numeric.items():
        exact = set(rows.matrix[rows.kinds == THRESHOLD, column].tolist())
        above = set(rows.matrix[rows.kinds == ABOVE, column].tolist())
        below = set(rows.matrix[rows.kinds == BELOW, column].tolist())
        for threshold in thresholds:
            assert threshold in exact, f"threshold {threshold!r} of column {column} not covered"
            assert np.nextafter(threshold, np.inf) in above
            assert np.nextafter(threshold, -np.inf) in below


def test_all_missing_row(model):
    encoding, booster = model
    rows = make_check_rows(booster, features_for(encoding))
    missing = rows.matrix[rows.kinds == MISSING]
    assert np.isnan(missing).all(axis=1).any()
    # Each column is missing alone in one row.
    for column in range(missing.shape[1]):
        alone = np.isnan(missing[:, column]) & (np.isnan(missing).sum(axis=1) == 1)
        assert alone.any(), f"no row with only column {column} missing"


def test_frequency_categorical_zero_and_negative():
    booster = train_tiny(FREQUENCY)
    rows = make_check_rows(booster, features_for(FREQUENCY))
    categorical = rows.matrix[rows.kinds == CATEGORICAL]
    for column in CATEGORICAL_COLUMNS:
        values = set(categorical[:, column].tolist())
        assert 0.0 in values
        assert any(value < 0 for value in values)


def test_native_categorical_unseen_negative_huge():
    booster = train_tiny(NATIVE)
    rows = make_check_rows(booster, features_for(NATIVE))
    points = split_points(booster.dump_model())
    categorical = rows.matrix[rows.kinds == CATEGORICAL]
    native_columns = [column for column, entry in points.items() if entry.categories]
    assert native_columns, "expected the native model to have categorical splits"
    for column in native_columns:
        values = set(categorical[:, column].tolist())
        assert max(points[column].categories) + 1 in values
        assert any(value < 0 for value in values)
        assert NATIVE_HUGE_CODE in values


def test_expected_is_lightgbm_prediction(model):
    encoding, booster = model
    rows = make_check_rows(booster, features_for(encoding))
    np.testing.assert_array_equal(rows.expected, booster.predict(rows.matrix))
    assert set(rows.counts()) == {ORDINARY, MISSING, THRESHOLD, ABOVE, BELOW, CATEGORICAL}


def test_sample_rows_become_ordinary(model):
    encoding, booster = model
    sample, _ = training_rows(rows=50, seed=3)
    rows = make_check_rows(booster, features_for(encoding), sample=sample, ordinary_rows=20)
    ordinary = rows.matrix[rows.kinds == ORDINARY]
    assert ordinary.shape[0] == 20
    for row in ordinary:
        assert any(np.array_equal(row, candidate, equal_nan=True) for candidate in sample)


def test_wrong_feature_count_rejected():
    booster = train_tiny(FREQUENCY)
    with pytest.raises(ValueError, match="6 features"):
        make_check_rows(booster, features_for(FREQUENCY)[:5])


def test_parquet_round_trip(tmp_path, model):
    encoding, booster = model
    features = features_for(encoding)
    rows = make_check_rows(booster, features)
    path = tmp_path / "check_rows.parquet"
    write_check_rows(path, rows, features)
    # Columns are read by name, so a reversed feature list gives reversed columns.
    loaded = read_check_rows(path, list(reversed(features)))
    np.testing.assert_array_equal(loaded.matrix, rows.matrix[:, ::-1])
    np.testing.assert_array_equal(loaded.kinds, rows.kinds)
    np.testing.assert_array_equal(loaded.expected, rows.expected)


def test_parquet_is_reproducible(tmp_path):
    booster = train_tiny(FREQUENCY)
    features = features_for(FREQUENCY)
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_check_rows(first, make_check_rows(booster, features), features)
    write_check_rows(second, make_check_rows(booster, features), features)
    assert first.read_bytes() == second.read_bytes()
