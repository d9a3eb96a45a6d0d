"""Score one feature partition with a model bundle."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ctr_inference.bundle import Bundle
from ctr_inference.calibration import correct_negative_sampling, negative_rate_of
from ctr_inference.contract import MODEL_VERSION, PREDICTION, ROW_ID, feature_matrix, row_ids
from ctr_inference.engines import Engine, load_engine

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field(ROW_ID, pa.int64(), nullable=False),
        pa.field(PREDICTION, pa.float64()),
        pa.field(MODEL_VERSION, pa.string(), nullable=False),
    ]
)


class Scorer:
    """Turns feature tables into prediction tables for one bundle."""

    def __init__(self, bundle: Bundle, engine: Engine | None = None, threads: int | None = None):
        self.bundle = bundle
        self.engine = engine or load_engine(bundle, threads)
        # Below 1 the model was trained on downsampled non-clicks; predict() corrects for it.
        self.negative_rate = negative_rate_of(bundle.metadata)

    def predict(self, table: pa.Table) -> np.ndarray:
        """Return predicted CTR for every row of ``table``, selecting features by name.

        Raises:
            MissingFeatureError, FeatureDtypeError: the table breaks the feature contract.
        """
        # Built in the order the engine reads, so the engine makes no copy of its own.
        matrix = feature_matrix(table, self.bundle.features, order=self.engine.input_order)
        predictions = self.engine.predict(matrix)
        if self.negative_rate < 1:
            predictions = correct_negative_sampling(predictions, self.negative_rate)
        return predictions

    def score(self, table: pa.Table) -> pa.Table:
        """Return the prediction table (``row_id``, ``ctr``, ``model_version``) for ``table``."""
        ids = row_ids(table)
        predictions = self.predict(table)
        version = pa.repeat(pa.scalar(self.bundle.model_version, pa.string()), len(ids))
        return pa.Table.from_arrays([pa.array(ids, pa.int64()), pa.array(predictions), version],
                                    schema=OUTPUT_SCHEMA)
