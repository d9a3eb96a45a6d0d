"""The feature contract: columns by name, dtype casts and the missing-value policy."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from ctr_inference.contract import C_ORDER_BLOCK_ROWS, Feature, feature_matrix, row_ids
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


@pytest.mark.parametrize("order", ["C", "F"])
def test_matrix_built_in_requested_order(order):
    rows = C_ORDER_BLOCK_ROWS * 2 + 5
    rng = np.random.default_rng(0)
    a = rng.normal(size=rows)
    b = rng.integers(0, 100, size=rows)
    # Two chunks whose boundary falls inside a block, and nulls in both columns.
    table = pa.table({
        "a": pa.chunked_array([pa.array(a[:1000], mask=a[:1000] > 1.5), pa.array(a[1000:])]),
        "b": pa.array(b, pa.int32(), mask=b == 7),
        "c": pa.array(a * 2, pa.float32()),
    })
    matrix = feature_matrix(table, FEATURES, order=order)
    assert matrix.flags.c_contiguous if order == "C" else matrix.flags.f_contiguous
    expected = np.column_stack([np.where(a > 1.5, np.nan, a)[:1000].tolist() + a[1000:].tolist(),
                                np.where(b == 7, np.nan, b), (a * 2).astype(np.float32)])
    np.testing.assert_array_equal(matrix, expected)


def test_empty_table_gives_empty_c_matrix():
    table = pa.table({"a": pa.array([], pa.float64()), "b": pa.array([], pa.int64()),
                      "c": pa.array([], pa.float64())})
    assert feature_matrix(table, FEATURES, order="C").shape == (0, 3)


def test_unknown_matrix_order_rejected():
    with pytest.raises(ValueError, match="'K'"):
        feature_matrix(pa.table({"a": [1.0], "b": [1.0], "c": [1.0]}), FEATURES, order="K")
