"""The feature contract: columns by name, dtype casts and the missing-value policy."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from ctr_inference.contract import Feature, feature_matrix, row_ids
from ctr_inference.errors import FeatureDtypeError, MissingFeatureError

FEATURES = [Feature("a"), Feature("b"), Feature("c")]


def test_columns_selected_by_name_not_position():
    table = pa.table({"c": [3.0], "extra": ["x"], "a": [1.0], "b": [2.0]})
    assert feature_matrix(table, FEATURES).tolist() == [[1.0, 2.0, 3.0]]


def test_integer_types_cast_to_float64():
    table = pa.table({"a": pa.array([1], pa.int32()), "b": pa.array([2], pa.int64()),
                      "c": pa.array([3.5], pa.float32())})
    matrix = feature_matrix(table, FEATURES)
    assert matrix.dtype == np.float64
    assert matrix.tolist() == [[1.0, 2.0, 3.5]]


def test_nulls_become_nan():
    table = pa.table({"a": pa.array([None, 1], pa.int64()), "b": [float("nan"), 2.0],
                      "c": pa.array([None, None], pa.null())})
    matrix = feature_matrix(table, FEATURES)
    assert math.isnan(matrix[0, 0])
    assert math.isnan(matrix[0, 1])
    assert np.isnan(matrix[:, 2]).all()
    assert matrix[1, 0] == 1.0


def test_missing_column_names_it():
    with pytest.raises(MissingFeatureError, match="'b'"):
        feature_matrix(pa.table({"a": [1.0], "c": [1.0]}), FEATURES)


def test_string_column_is_wrong_dtype():
    with pytest.raises(FeatureDtypeError, match="'c' has type string"):
        feature_matrix(pa.table({"a": [1.0], "b": [1.0], "c": ["1"]}), FEATURES)


def test_row_ids_require_integers_without_nulls():
    assert row_ids(pa.table({"row_id": pa.array([1, 2], pa.int32())})).tolist() == [1, 2]
    with pytest.raises(FeatureDtypeError):
        row_ids(pa.table({"row_id": pa.array([1, None], pa.int64())}))
    with pytest.raises(MissingFeatureError):
        row_ids(pa.table({"id": [1]}))


def test_empty_table_gives_empty_matrix():
    table = pa.table({"a": pa.array([], pa.float64()), "b": pa.array([], pa.int64()),
                      "c": pa.array([], pa.float64())})
    assert feature_matrix(table, FEATURES).shape == (0, 3)
