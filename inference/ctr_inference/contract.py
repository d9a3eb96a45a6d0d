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


def feature_matrix(table: pa.Table, features: list[Feature]) -> np.ndarray:
    """Build the float64 matrix the model scores, columns in the model's order.

    The matrix is Fortran-ordered so each column is filled with one contiguous
    copy; LightGBM reads column-major input without another copy.

    Raises:
        MissingFeatureError, FeatureDtypeError: as ``check_columns``.
    """
    check_columns(table.schema, features)
    matrix = np.empty((table.num_rows, len(features)), dtype=np.float64, order="F")
    for j, feature in enumerate(features):
        column = table.column(feature.name)
        if column.type != pa.float64():
            column = pc.cast(column, pa.float64())
        # Nulls become NaN here: the missing-value policy.
        matrix[:, j] = column.to_numpy(zero_copy_only=False)
    return matrix


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
