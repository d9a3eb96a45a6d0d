"""The feature contract shared by the Spark feature job, training and the scorer.

A feature partition is Parquet with a ``row_id`` column (int64, stable from the
raw log line to the prediction), an optional ``label`` column, and one column
per model feature. The model bundle lists the features by name and dtype. The
scorer selects columns by name, never by position, so reordered or extra
columns are harmless.

Missing-value policy, identical in training and scoring: a null or NaN feature
value becomes NaN, which LightGBM routes down each split's default branch.
Categorical features arrive already encoded as numbers by the feature job
(the encoding table travels in the bundle), so the scorer only sees numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_inference.errors import FeatureDtypeError, MissingFeatureError

ROW_ID = "row_id"
LABEL = "label"
PREDICTION = "ctr"
MODEL_VERSION = "model_version"

# Feature kinds, as recorded in the bundle.
NUMERIC = "numeric"
CATEGORICAL_FREQUENCY = "categorical_frequency"

# Every feature is scored as float64; these Arrow types cast to it exactly
# (int64 above 2**53 loses precision, which no count or id feature reaches).
_CASTABLE = (pa.types.is_integer, pa.types.is_floating, pa.types.is_null)
# Rows per block when filling a C-ordered matrix column by column.
C_ORDER_BLOCK_ROWS = 8192


@dataclass(frozen=True)
class Feature:
    """One model input: its column name, its scoring dtype and how it was made."""

    name: str
    dtype: str = "float64"
    kind: str = NUMERIC

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Feature:
        return cls(name=data["name"], dtype=data.get("dtype", "float64"), kind=data.get("kind", NUMERIC))


def check_columns(schema: pa.Schema, features: list[Feature]) -> None:
    """Check that every feature is a column of ``schema`` with a castable type.

    Raises:
        MissingFeatureError: a feature is not a column.
        FeatureDtypeError: a feature column is not integer, floating-point or null.
    """
    for feature in features:
        index = schema.get_field_index(feature.name)
        if index < 0:
            raise MissingFeatureError(feature.name)
        arrow_type = schema.field(index).type
        if not any(check(arrow_type) for check in _CASTABLE):
            raise FeatureDtypeError(feature.name, feature.dtype, str(arrow_type))


def feature_matrix(table: pa.Table, features: list[Feature], order: str = "F") -> np.ndarray:
    """Build the float64 matrix the model scores, columns in the model's order.

    ``order`` is the memory order of the matrix: "F" (column-major, what
    LightGBM reads without another copy) or "C" (row-major, what the compiled
    engines read). Either way every value is copied once, from the Arrow
    column straight into the matrix.

    Raises:
        MissingFeatureError, FeatureDtypeError: as ``check_columns``.
        ValueError: ``order`` is neither "C" nor "F".
    """
    if order not in ("C", "F"):
        raise ValueError(f"matrix order {order!r} is invalid, expected 'C' or 'F'")
    check_columns(table.schema, features)
    matrix = np.empty((table.num_rows, len(features)), dtype=np.float64, order=order)
    columns = [_float64_column(table, feature) for feature in features]
    if order == "F":
        # Each matrix column is contiguous, so one column is one contiguous copy.
        for j, column in enumerate(columns):
            matrix[:, j] = column.to_numpy(zero_copy_only=False)
        return matrix

    # A column of a row-major matrix is strided. Filling it in blocks of rows
    # keeps the block being written in the CPU cache.
    for start in range(0, table.num_rows, C_ORDER_BLOCK_ROWS):
        block = matrix[start:start + C_ORDER_BLOCK_ROWS]
        for j, column in enumerate(columns):
            block[:, j] = column.slice(start, C_ORDER_BLOCK_ROWS).to_numpy(zero_copy_only=False)
    return matrix


def _float64_column(table: pa.Table, feature: Feature) -> pa.ChunkedArray:
    column = table.column(feature.name)
    if column.type != pa.float64():
        column = pc.cast(column, pa.float64())
    # Nulls become NaN when the column is converted to NumPy: the missing-value policy.
    return column


def row_ids(table: pa.Table) -> np.ndarray:
    """Return the partition's ``row_id`` column as int64.

    Raises:
        MissingFeatureError: the partition has no ``row_id`` column.
        FeatureDtypeError: ``row_id`` is not an integer column or contains nulls.
    """
    if ROW_ID not in table.column_names:
        raise MissingFeatureError(ROW_ID)
    column = table.column(ROW_ID)
    if not pa.types.is_integer(column.type) or column.null_count:
        raise FeatureDtypeError(ROW_ID, "int64 without nulls", str(column.type))
    return pc.cast(column, pa.int64()).to_numpy()
