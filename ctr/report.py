"""The run report: what a scoring run read, wrote and how well the predictions fit the labels."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ctr_inference.contract import LABEL, PREDICTION, ROW_ID
from ctr_inference.dispatch import list_keys

logger = logging.getLogger(__name__)


def download_outputs(s3, bucket: str, prefix: str, local_dir: Path) -> list[Path]:
    """Copy a run's prediction partitions to ``local_dir`` and return the local paths."""
    local_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key in list_keys(s3, bucket, prefix):
        if key.endswith(".parquet"):
            target = local_dir / key.rsplit("/", 1)[-1]
            s3.download_file(bucket, key, str(target))
            paths.append(target)
    return paths


def build_report(s3, bucket: str, prefix: str, local_dir: Path, features_dir: Path, seconds: float,
                 facts: dict) -> dict:
    """Compare a run's outputs with its input partitions and summarize them.

    ``rows_in`` counts input rows, ``rows_scored`` output rows; ``missing_rows``
    and ``duplicate_rows`` must both be 0 for a complete run. AUC and logloss
    are reported when the input partitions carry labels.
    """
    from ctr_training.train import evaluate

    outputs = pa.concat_tables(pq.read_table(p) for p in download_outputs(s3, bucket, prefix, local_dir))
    inputs = pa.concat_tables(
        pq.read_table(p, columns=[c for c in (ROW_ID, LABEL) if c in pq.read_schema(p).names])
        for p in sorted(Path(features_dir).glob("*.parquet"))
    )
    output_ids = outputs.column(ROW_ID).to_numpy()
    unique_ids = np.unique(output_ids)
    input_ids = inputs.column(ROW_ID).to_numpy()

    report = dict(facts)
    report.update(
        rows_in=int(inputs.num_rows),
        rows_scored=int(outputs.num_rows),
        partitions=len(list(Path(local_dir).glob("*.parquet"))),
        duplicate_rows=int(len(output_ids) - len(unique_ids)),
        missing_rows=len(np.setdiff1d(input_ids, unique_ids)),
        scoring_seconds=round(seconds, 3),
        rows_per_second=round(outputs.num_rows / seconds, 1) if seconds > 0 else None,
        mean_predicted_ctr=float(pc.mean(outputs.column(PREDICTION)).as_py()),
    )
    if LABEL in inputs.column_names:
        joined = outputs.select([ROW_ID, PREDICTION]).join(inputs, ROW_ID)
        metrics = evaluate(joined.column(LABEL).to_numpy(), joined.column(PREDICTION).to_numpy())
        report.update(auc=metrics.get("auc"), logloss=metrics["logloss"],
                      observed_ctr=metrics["mean_ctr_observed"])
    return report
